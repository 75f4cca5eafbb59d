//! Attribute columns on import: found, named, bucketed, never a crash.

use std::path::Path;

use super::*;
use crate::context::{MAX_ATTRIBUTES, MAX_ATTRIBUTE_LEN, MAX_ATTRIBUTE_VALUES};

fn import(
    text: &[u8],
    format: Format,
    attributes: AttributeColumns,
) -> Result<(Trace, ImportReport), ImportError> {
    let opts = ImportOptions {
        attributes,
        ..ImportOptions::default()
    };
    import_reader(text, Path::new("t"), format, &opts, Vocabulary::new())
}

fn value<'a>(t: &'a Trace, attr: &str, session: usize, request: usize) -> Option<&'a str> {
    let i = t.attributes.index(attr)?;
    let id = t.sessions[session].requests[request].attrs.get(i);
    (id != 0)
        .then(|| t.attributes.values(i)?.name(u32::from(id)))
        .flatten()
}

const CSV: &str = "user_id,session_id,event,timestamp,platform,cohort\n\
    u1,s1,home,2024-03-13 10:21:14,desktop,2024-01\n\
    u1,s1,cart,2024-03-13 10:21:28,,2024-01\n\
    u2,s2,home,2024-03-13 11:00:00,mobile\n";

#[test]
fn every_other_column_is_an_attribute_by_default() {
    let (t, r) = import(CSV.as_bytes(), Format::Csv, AttributeColumns::All).unwrap();
    assert_eq!(t.attributes.names(), ["platform", "cohort"]);
    assert_eq!(value(&t, "platform", 0, 0), Some("desktop"));
    // Empty and missing values are the unknown bucket, not malformed rows.
    assert_eq!(value(&t, "platform", 0, 1), None);
    assert_eq!(value(&t, "cohort", 0, 1), Some("2024-01"));
    assert_eq!(value(&t, "platform", 1, 0), Some("mobile"));
    assert_eq!(value(&t, "cohort", 1, 0), None);
    assert_eq!((r.rows, r.skipped), (3, 0));
    assert_eq!(t.attributes.bucketed(0).empty, 1);
    assert_eq!(t.attributes.bucketed(1).empty, 1);
}

#[test]
fn named_columns_only_and_a_missing_one_is_a_clear_error() {
    let named = |n: &[&str]| AttributeColumns::Named(n.iter().map(|s| s.to_string()).collect());
    let (t, _) = import(CSV.as_bytes(), Format::Csv, named(&["Cohort"])).unwrap();
    assert_eq!(t.attributes.names(), ["cohort"]);
    let (t, _) = import(CSV.as_bytes(), Format::Csv, AttributeColumns::None).unwrap();
    assert!(t.attributes.is_empty());
    assert!(t.sessions[0].requests[0].attrs.is_unknown());
    let err = import(CSV.as_bytes(), Format::Csv, named(&["channel"])).unwrap_err();
    assert!(matches!(err, ImportError::MissingColumn { .. }), "{err}");
    assert!(err.to_string().contains("--attribute-columns"), "{err}");
    let many: Vec<String> = (0..=MAX_ATTRIBUTES).map(|_| "cohort".to_string()).collect();
    let err = import(CSV.as_bytes(), Format::Csv, AttributeColumns::Named(many)).unwrap_err();
    assert!(matches!(err, ImportError::Attributes { .. }), "{err}");
}

#[test]
fn over_long_non_utf8_and_high_cardinality_values_are_bucketed() {
    let mut text = b"session,type,ts,platform,id\n".to_vec();
    let long = "x".repeat(MAX_ATTRIBUTE_LEN + 1);
    text.extend(format!("s1,a,1,{long},0\n").as_bytes());
    text.extend(b"s1,b,2,\xff\xfe,1\n");
    for i in 0..MAX_ATTRIBUTE_VALUES + 50 {
        text.extend(format!("s2,a,{},web,id-{i}\n", i + 10).as_bytes());
    }
    // A non-UTF-8 key field is still a malformed row.
    text.extend(b"s\xff,a,3,web,x\n");
    let (t, r) = import(&text, Format::Csv, AttributeColumns::All).unwrap();
    assert_eq!(r.skipped, 1);
    assert_eq!(r.examples[0].1, "not UTF-8");
    assert_eq!(t.request_count(), 2 + MAX_ATTRIBUTE_VALUES + 50);
    assert_eq!(value(&t, "platform", 0, 0), None);
    assert_eq!(value(&t, "platform", 0, 1), None);
    assert_eq!(value(&t, "platform", 1, 0), Some("web"));
    let p = t.attributes.bucketed(0);
    assert_eq!((p.too_long, p.not_text), (1, 1));
    let id = t.attributes.index("id").unwrap();
    assert_eq!(
        t.attributes.values(id).unwrap().len(),
        MAX_ATTRIBUTE_VALUES + 1
    );
    assert_eq!(t.attributes.bucketed(id).overflow, 2 + 50);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("\"id\"") && w.contains("identifier")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("not UTF-8")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn too_many_columns_keep_the_first_and_warn() {
    let extra: Vec<String> = (0..MAX_ATTRIBUTES + 2).map(|i| format!("a{i}")).collect();
    let text = format!(
        "session,type,ts,{},\ns,x,1,{}\n",
        extra.join(","),
        ["v"; MAX_ATTRIBUTES + 3].join(",")
    );
    let (t, r) = import(text.as_bytes(), Format::Csv, AttributeColumns::All).unwrap();
    assert_eq!(t.attributes.len(), MAX_ATTRIBUTES);
    assert_eq!(t.attributes.names()[0], "a0");
    // Two names past the limit and one empty header name left out, each with a warning.
    assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
}

#[test]
fn json_lines_attributes_are_found_as_the_rows_come() {
    let text = "{\"session\":1,\"type\":\"a\",\"ts\":1,\"cohort\":\"c1\"}\n\
        {\"session\":1,\"type\":\"b\",\"ts\":2,\"cohort\":3,\"vip\":true}\n\
        {\"session\":1,\"type\":\"c\",\"ts\":3,\"cohort\":null,\"vip\":{\"x\":1}}\n";
    let (t, r) = import(text.as_bytes(), Format::Jsonl, AttributeColumns::All).unwrap();
    assert_eq!(r.skipped, 0);
    assert_eq!(t.attributes.names(), ["cohort", "vip"]);
    assert_eq!(value(&t, "cohort", 0, 0), Some("c1"));
    assert_eq!(value(&t, "cohort", 0, 1), Some("3"));
    assert_eq!(value(&t, "vip", 0, 1), Some("true"));
    assert_eq!(value(&t, "cohort", 0, 2), None);
    assert_eq!(value(&t, "vip", 0, 2), Some("{\"x\":1}"));
    let named = AttributeColumns::Named(vec!["vip".into()]);
    let (t, _) = import(text.as_bytes(), Format::Jsonl, named).unwrap();
    assert_eq!(t.attributes.names(), ["vip"]);
    assert_eq!(value(&t, "vip", 0, 0), None);
}

#[test]
fn the_shared_ecom_trace_has_its_four_attributes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ecom.csv.gz");
    if !path.exists() {
        return;
    }
    let (t, r) = import_path(&path, &ImportOptions::default(), Vocabulary::new()).unwrap();
    assert_eq!(
        t.attributes.names(),
        [
            "platform",
            "acquisition_channel",
            "user_cohort",
            "user_lifecycle"
        ]
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(t.sessions[0].requests.iter().all(|q| !q.attrs.is_unknown()));
}
