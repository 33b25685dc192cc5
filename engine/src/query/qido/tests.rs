use super::*;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

fn search(level: Level, pairs: &[(&str, &str)]) -> Result<Search, String> {
    parse(level, &Scope::default(), &params(pairs))
}

fn matcher(search: &Search, tag: Tag) -> Option<&Matcher> {
    search.query.keys.iter().find(|key| key.tag == tag).map(|key| &key.matcher)
}

#[test]
fn keyword_and_tag_name_the_same_key() {
    let by_keyword = search(Level::Study, &[("PatientName", "Doe*")]).unwrap();
    let by_tag = search(Level::Study, &[("00100010", "Doe*")]).unwrap();
    assert_eq!(by_keyword.query.keys, by_tag.query.keys);
    assert_eq!(
        matcher(&by_keyword, tags::PATIENT_NAME),
        Some(&Matcher::Wildcard("Doe*".into()))
    );
}

#[test]
fn study_search_returns_table_fields_and_unique_key() {
    let search = search(Level::Study, &[]).unwrap();
    for tag in STUDY_FIELDS {
        assert!(matcher(&search, *tag).is_some(), "{tag:?} missing");
    }
    assert!(matcher(&search, tags::MODALITY).is_none());
    let tags: Vec<Tag> = search.query.keys.iter().map(|key| key.tag).collect();
    let mut sorted = tags.clone();
    sorted.sort();
    assert_eq!(tags, sorted);
}

#[test]
fn instance_search_in_series_omits_upper_fields() {
    let scope = Scope { study: Some("1.2".into()), series: Some("1.3".into()) };
    let search = parse(Level::Image, &scope, &[]).unwrap();
    assert_eq!(matcher(&search, tags::STUDY_INSTANCE_UID), Some(&Matcher::Single("1.2".into())));
    assert_eq!(matcher(&search, tags::SERIES_INSTANCE_UID), Some(&Matcher::Single("1.3".into())));
    assert!(matcher(&search, tags::PATIENT_NAME).is_none());
    assert!(matcher(&search, tags::MODALITY).is_none());
    assert!(matcher(&search, tags::ROWS).is_some());
    let across = search_all_instances();
    assert!(matcher(&across, tags::PATIENT_NAME).is_some());
    assert!(matcher(&across, tags::MODALITY).is_some());
}

fn search_all_instances() -> Search {
    search(Level::Image, &[]).unwrap()
}

#[test]
fn uid_lists_take_commas_or_backslashes() {
    let commas = search(Level::Study, &[("StudyInstanceUID", "1.2,1.3")]).unwrap();
    let backslashes = search(Level::Study, &[("StudyInstanceUID", "1.2\\1.3")]).unwrap();
    let expected = Matcher::List(vec!["1.2".into(), "1.3".into()]);
    assert_eq!(matcher(&commas, tags::STUDY_INSTANCE_UID), Some(&expected));
    assert_eq!(matcher(&backslashes, tags::STUDY_INSTANCE_UID), Some(&expected));
}

#[test]
fn date_ranges_open_and_closed() {
    let open = search(Level::Study, &[("StudyDate", "-20210115")]).unwrap();
    assert_eq!(
        matcher(&open, tags::STUDY_DATE),
        Some(&Matcher::Range { lower: None, upper: Some("20210115".into()) })
    );
    let closed = search(Level::Study, &[("StudyDate", "20000101-20101231")]).unwrap();
    assert_eq!(
        matcher(&closed, tags::STUDY_DATE),
        Some(&Matcher::Range { lower: Some("20000101".into()), upper: Some("20101231".into()) })
    );
    assert!(search(Level::Study, &[("StudyDate", "2000*")]).is_err());
    assert!(search(Level::Study, &[("StudyDate", "1-2-3")]).is_err());
}

#[test]
fn unknown_or_invalid_parameters_are_rejected() {
    assert!(search(Level::Study, &[("NoSuchKeyword", "x")]).unwrap_err().contains("NoSuchKeyword"));
    assert!(search(Level::Study, &[("0010001", "x")]).is_err());
    assert!(search(Level::Study, &[("00091001", "x")]).is_err());
    assert!(search(Level::Study, &[("limit", "-1")]).is_err());
    assert!(search(Level::Study, &[("offset", "ten")]).is_err());
    assert!(search(Level::Study, &[("fuzzymatching", "maybe")]).is_err());
    assert!(search(Level::Study, &[("StudyInstanceUID", "1.2.*")]).is_err());
}

#[test]
fn lower_level_key_rejected_or_skipped() {
    assert!(search(Level::Study, &[("Modality", "CT")]).unwrap_err().contains("series"));
    let included = search(Level::Study, &[("includefield", "Modality")]).unwrap();
    assert!(matcher(&included, tags::MODALITY).is_none());
    assert!(search(Level::Series, &[("Modality", "CT")]).is_ok());
}

#[test]
fn limit_offset_and_fuzzy() {
    let search = search(Level::Series, &[("limit", "10"), ("offset", "20"), ("fuzzymatching", "true")]).unwrap();
    assert_eq!(search.query.limit, Some(10));
    assert_eq!(search.query.offset, 20);
    assert!(search.fuzzy);
}

#[test]
fn includefield_lists_and_all() {
    let listed = search(Level::Study, &[("includefield", "StudyDescription,00081030"), ("includefield", "PatientAge")]).unwrap();
    assert_eq!(matcher(&listed, tags::STUDY_DESCRIPTION), Some(&Matcher::Universal));
    assert_eq!(matcher(&listed, tags::PATIENT_AGE), Some(&Matcher::Universal));
    let all = search(Level::Series, &[("includefield", "all")]).unwrap();
    assert!(matcher(&all, tags::BODY_PART_EXAMINED).is_some());
    assert!(matcher(&all, tags::STUDY_DESCRIPTION).is_some());
    assert!(matcher(&all, tags::SOP_CLASS_UID).is_none());
}

#[test]
fn dotted_path_builds_a_sequence_key() {
    let search = search(Level::Series, &[("00400275.00321060", "CHEST*")]).unwrap();
    let Some(Matcher::Sequence(items)) = matcher(&search, tags::REQUEST_ATTRIBUTES_SEQUENCE) else {
        panic!("expected a sequence key");
    };
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].tag, tags::REQUESTED_PROCEDURE_DESCRIPTION);
    assert_eq!(items[0].matcher, Matcher::Wildcard("CHEST*".into()));
    assert!(parse_path("PatientName.PatientID").is_err());
}

#[test]
fn path_uid_cannot_be_matched_again() {
    let scope = Scope { study: Some("1.2".into()), series: None };
    assert!(parse(Level::Series, &scope, &params(&[("StudyInstanceUID", "1.3")])).is_err());
    assert!(parse(Level::Series, &scope, &params(&[("includefield", "StudyInstanceUID")])).is_ok());
}

#[test]
fn key_matched_twice_is_rejected() {
    assert!(search(Level::Study, &[("PatientID", "A"), ("00100020", "B")]).is_err());
}
