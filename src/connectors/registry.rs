//! The set of known connector definitions: the built-in ones, then the user's
//! `connectors_dir`, where a file with the same `name` replaces the built-in.

use super::definition::{ConnectorDef, DefinitionError, BUILTIN};
use super::http::{HttpConnector, ProcessorSpec};
use super::manual::ManualConnector;
use super::s3::S3Connector;
use super::Connector;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Known connector definitions by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    defs: BTreeMap<String, Arc<ConnectorDef>>,
}

impl Registry {
    /// Load the built-in definitions and, if given, every `*.toml` in `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Registry, DefinitionError> {
        let mut reg = Registry::default();
        for (file, text) in BUILTIN {
            reg.insert(ConnectorDef::parse(
                &format!("connectors/{file} (built in)"),
                text,
            )?);
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|e| DefinitionError {
                file: dir.display().to_string(),
                key: "connectors_dir".into(),
                reason: format!("cannot read directory: {e}"),
            })?;
            let mut paths: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let file = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|e| DefinitionError {
                    file: file.clone(),
                    key: String::new(),
                    reason: format!("cannot read: {e}"),
                })?;
                reg.insert(ConnectorDef::parse(&file, &text)?);
            }
        }
        Ok(reg)
    }

    fn insert(&mut self, def: ConnectorDef) {
        self.defs.insert(def.name.clone(), Arc::new(def));
    }

    /// A definition by name.
    pub fn get(&self, name: &str) -> Option<&Arc<ConnectorDef>> {
        self.defs.get(name)
    }

    /// Every known name.
    pub fn names(&self) -> Vec<&str> {
        self.defs.keys().map(|s| s.as_str()).collect()
    }

    /// How a connector's calls treat redirects (`[limits] follow_redirects`).
    pub fn follow_redirects(&self, connector: &str) -> super::redirect::FollowRedirects {
        self.defs
            .get(connector)
            .map(|d| d.limits.follow_redirects)
            .unwrap_or_default()
    }

    /// Build the connector for one processor.
    pub fn build(
        &self,
        connector: &str,
        spec: ProcessorSpec,
        client: reqwest::Client,
    ) -> Option<Arc<dyn Connector>> {
        let def = self.defs.get(connector)?.clone();
        let timeout = spec.timeout.unwrap_or(def.limits.timeout.get());
        match def.native.as_deref() {
            None => Some(Arc::new(HttpConnector::new(spec, def, client))),
            Some("s3") => Some(Arc::new(S3Connector::new(spec, client, timeout))),
            Some("manual") => Some(Arc::new(ManualConnector::new(spec, client, timeout))),
            // Definitions are validated at load: an unknown native name never gets here.
            Some(_) => None,
        }
    }
}
