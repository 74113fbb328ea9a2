fn main() {
    let db = &*phonenumber::metadata::DATABASE;
    for c in [1u16, 44, 39, 49] {
        for m in db.by_code(&c).unwrap_or_default() {
            let d = m.descriptors();
            println!("{} {} main={} np={:?} gen={:?} mob={:?} fixed={:?}", c, m.id(), m.is_main_country_for_code(), m.national_prefix(), d.general().possible_length(), d.mobile().map(|x| x.possible_length().to_vec()), d.fixed_line().map(|x| x.possible_length().to_vec()));
        }
    }
}
