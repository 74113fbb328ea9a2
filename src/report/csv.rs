//! The period report as CSV: one tidy table (`scope, processor, metric,
//! value`) so that every figure of the report is one row a spreadsheet can
//! filter or pivot, and a new metric is a new row rather than a new column.

use super::{Certificate, PeriodReport};

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV rendering (RFC 4180, CRLF line ends).
pub fn period(r: &PeriodReport) -> String {
    let mut rows: Vec<[String; 4]> = vec![];
    let mut row = |scope: &str, p: &str, m: &str, v: String| {
        rows.push([scope.into(), p.into(), m.into(), v]);
    };
    row("period", "", "from", r.from.clone());
    row("period", "", "to", r.to.clone());
    let c = &r.requests;
    for (m, v) in [
        ("received", c.received),
        ("erasure", c.erasure),
        ("export", c.export),
        ("objection", c.objection),
        ("rectification", c.rectification),
        ("completed", c.completed),
        ("on_time", c.on_time),
        ("late", c.late),
        ("overdue", c.overdue),
        ("open", c.open),
        ("failed", c.failed),
        ("cancelled", c.cancelled),
    ] {
        row("requests", "", m, v.to_string());
    }
    let t = &r.time_to_complete;
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    row("time_to_complete", "", "count", t.count.to_string());
    row("time_to_complete", "", "p50_ms", opt(t.p50_ms));
    row("time_to_complete", "", "p90_ms", opt(t.p90_ms));
    row("time_to_complete", "", "max_ms", opt(t.max_ms));
    for p in &r.processors {
        row("processor", &p.processor, "category", p.category.clone());
        for (m, v) in [
            ("steps", p.steps),
            ("completed", p.completed),
            ("failed", p.failed),
            ("held", p.held),
            ("open", p.open),
            ("cancelled", p.cancelled),
        ] {
            row("processor", &p.processor, m, v.to_string());
        }
        for (o, n) in &p.outcomes {
            row(
                "processor",
                &p.processor,
                &format!("outcome_{o}"),
                n.to_string(),
            );
        }
        row("processor", &p.processor, "median_ms", opt(p.median_ms));
    }
    for st in &r.retention_sweeps {
        let scope = format!("sweep:{}", st.schedule);
        for (m, v) in [
            ("runs", st.runs as i64),
            ("done", st.done as i64),
            ("failed_runs", st.failed_runs as i64),
            ("items_removed", st.items_removed),
            ("items_failed", st.items_failed),
            ("items_unconfirmed", st.items_unconfirmed),
        ] {
            row(&scope, &st.processor, m, v.to_string());
        }
    }
    let mut out = String::from("scope,processor,metric,value\r\n");
    for r in rows {
        let f: Vec<String> = r.iter().map(|s| field(s)).collect();
        out.push_str(&f.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A certificate as CSV: one row per processor, with the request's id,
/// masked subject and status repeated on each (so rows stand alone in a sheet).
pub fn certificate(c: &Certificate) -> String {
    let mut out = String::from(
        "request_id,subject,request_status,processor,category,action,state,result,when,attempts,evidence,qualifier,chain_verified\r\n",
    );
    for p in &c.processors {
        let f = [
            c.request.id.clone(),
            c.request.subject.clone(),
            c.request.status.clone(),
            p.processor.clone(),
            p.category.clone(),
            p.action.clone(),
            p.state.clone(),
            p.result.clone(),
            p.when.clone().unwrap_or_default(),
            p.attempts.to_string(),
            p.evidence_line(),
            p.qualifier().unwrap_or_default(),
            c.audit.chain_verified.to_string(),
        ];
        let f: Vec<String> = f.iter().map(|s| field(s)).collect();
        out.push_str(&f.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(super::field("a,b"), "\"a,b\"");
        assert_eq!(super::field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::field("plain"), "plain");
    }
}
