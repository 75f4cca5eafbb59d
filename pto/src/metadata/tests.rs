use super::*;

/// Parses `text` against a base directory holding SMALL's file origin (`blobs/r2`, 10 bytes).
fn parse(text: &str) -> Result<ServiceCatalogue, MetadataError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("blobs")).unwrap();
    std::fs::write(dir.path().join("blobs/r2"), b"0123456789").unwrap();
    ServiceCatalogue::from_toml_str(text, "svc.toml", dir.path())
}

const SMALL: &str = r#"
[service]
name = "s"

[[requests]]
name = "a"
tasks = ["t2"]
next = ["b", { name = "a", weight = 0.5 }]

[[requests]]
name = "b"
app = "other"
tasks = ["t1"]

[[tasks]]
id = "t1"
resources = ["r1"]

[[tasks]]
id = "t2"
after = ["t1"]
resources = ["r2", "r1"]

[[resources]]
id = "r1"
kind = "code"
size = "2 KiB"
origin = { type = "generated", seed = 1 }

[[resources]]
id = "r2"
kind = "data"
size = 10
version = 3
origin = { type = "file", path = "blobs/r2" }
"#;

#[test]
fn loads_orders_dependencies_and_resolves_links() {
    let c = parse(SMALL).unwrap();
    let order: Vec<_> = c.tasks_of("a").iter().map(|t| t.id.as_str()).collect();
    assert_eq!(order, ["t1", "t2"], "the dependency comes first");
    let res: Vec<_> = c.resources_of("a").iter().map(|r| r.id.as_str()).collect();
    assert_eq!(res, ["r1", "r2"]);
    assert_eq!(c.request("a").unwrap().app, "s");
    assert_eq!(c.request("b").unwrap().app, "other");
    assert_eq!(
        c.request("a").unwrap().next,
        [("b".into(), 1.0), ("a".into(), 0.5)]
    );
    let r1 = c.resource("r1").unwrap();
    assert_eq!(
        (r1.size, r1.version, r1.kind),
        (2048, 1, ResourceKind::Code)
    );
    let content = c.content(r1).unwrap();
    assert_eq!(content.len(), 2048);
    assert_eq!(content, generated_content(1, 2048), "deterministic");
    assert_ne!(generated_content(2, 64), generated_content(1, 64));
    assert_eq!(c.vocabulary().get("b"), Some(2));
    assert!(c.tasks_of("zzz").is_empty());
}

fn invalid(text: &str) -> (usize, &'static str, String) {
    match parse(text) {
        Err(MetadataError::Invalid {
            line,
            field,
            problem,
            file,
        }) => {
            assert_eq!(file, "svc.toml");
            (line, field, problem.to_string())
        }
        other => panic!("want Invalid, got {other:?}"),
    }
}

#[test]
fn errors_name_line_and_field() {
    let (line, field, msg) = invalid(&SMALL.replace("after = [\"t1\"]", "after = [\"t9\"]"));
    assert_eq!((line, field), (21, "tasks.after"));
    assert!(msg.contains("t9"));
    let (line, field, _) = invalid(&SMALL.replace("size = 10", "size = \"ten\""));
    assert_eq!((line, field), (33, "resources.size"));
    let (_, field, _) = invalid(&SMALL.replace("next = [\"b\"", "next = [\"zz\""));
    assert_eq!(field, "requests.next");
    let (line, field, _) = invalid(&SMALL.replace("id = \"r2\"", "id = \"r1\""));
    assert_eq!((line, field), (31, "resources.id"));
    let (_, field, msg) = invalid(&SMALL.replace(
        "id = \"t1\"\nresources",
        "id = \"t1\"\nafter = [\"t2\"]\nresources",
    ));
    assert_eq!(field, "tasks.after");
    assert!(msg.contains("cycle"));
    let (_, field, _) = invalid(&SMALL.replace("weight = 0.5", "weight = -1.0"));
    assert_eq!(field, "requests.next.weight");
}

#[test]
fn parse_errors_carry_the_position() {
    let err = parse(&SMALL.replace("kind = \"code\"", "kind = \"binary\"")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("svc.toml"), "{msg}");
    assert!(msg.contains("line 26"), "{msg}");
    let err = parse("[service]\nname = \"x\"\nbogus = 1\n").unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("4 MiB"), Some(4 << 20));
    assert_eq!(parse_size("1.5 kB"), Some(1500));
    assert_eq!(parse_size("7"), Some(7));
    assert_eq!(parse_size("-1"), None);
    assert_eq!(parse_size("3 parsecs"), None);
}

#[test]
fn the_embedded_catalogue_is_valid_and_covers_the_ecom_trace() {
    let c =
        ServiceCatalogue::from_toml_str(DEFAULT_CATALOGUE, "shop.toml", Path::new(".")).unwrap();
    assert_eq!(c.requests.len(), 19);
    for r in &c.requests {
        let bytes: u64 = c.resources_of(&r.name).iter().map(|r| r.size).sum();
        assert!(
            bytes > 0 && bytes < 12 << 20,
            "{} needs {bytes} bytes",
            r.name
        );
    }
    for event in ["product_view", "checkout_bug", "payment_error", "home"] {
        assert!(c.request(event).is_some(), "{event}");
    }
}

#[test]
fn shop_tasks_claim_code_and_data_of_realistic_sizes() {
    let c = ServiceCatalogue::default_catalogue();
    for t in &c.tasks {
        let kinds: Vec<ResourceKind> = t.resources.iter().map(|&r| c.resources[r].kind).collect();
        assert!(
            kinds.contains(&ResourceKind::Code) && kinds.contains(&ResourceKind::Data),
            "task {} needs code and data",
            t.id
        );
    }
    for (i, r) in c.resources.iter().enumerate() {
        assert!(
            (16 << 10..=4 << 20).contains(&r.size),
            "{}: {}",
            r.id,
            r.size
        );
        assert_eq!(r.origin, Origin::Workload, "{}", r.id);
        let spec = c.workload_spec(r).unwrap();
        assert_eq!(spec.resource_id, i as u64 + 1);
        assert_eq!((spec.version, spec.size), (r.version, r.size));
    }
    // The small ones generate and process here (the large ones take longer in a debug build).
    for id in ["psp-certs", "error-code", "user-profile"] {
        let r = c.resource(id).unwrap();
        let bytes = c.content(r).unwrap();
        assert_eq!(bytes.len() as u64, r.size);
        let s = see_workload::process(&bytes).unwrap();
        assert_eq!(s.resource_id, c.resource_wire_id(r).unwrap());
    }
}

#[test]
fn sizes_scale_within_the_generator_range() {
    let mut c = ServiceCatalogue::default_catalogue();
    let before: Vec<u64> = c.resources.iter().map(|r| r.size).collect();
    c.scale_sizes(1.0 / 64.0);
    for (r, b) in c.resources.iter().zip(&before) {
        assert_eq!(
            r.size,
            (*b as f64 / 64.0).round().max(256.0) as u64,
            "{}",
            r.id
        );
        assert_eq!(c.content(r).unwrap().len() as u64, r.size);
    }
    c.scale_sizes(f64::NAN);
    assert_eq!(
        c.resources[0].size,
        (before[0] as f64 / 64.0).round() as u64
    );
}

#[test]
fn workload_resources_must_fit_the_generator() {
    let text = r#"
[service]
name = "s"
[[requests]]
name = "a"
tasks = ["t"]
[[tasks]]
id = "t"
resources = ["r"]
[[resources]]
id = "r"
kind = "data"
size = 100
version = 1
origin = { type = "workload" }
"#;
    let err = ServiceCatalogue::from_toml_str(text, "s.toml", Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("workload resource"), "{err}");
}

#[test]
fn file_origins_are_checked_at_load_against_the_metadata_directory() {
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("svc");
    std::fs::create_dir_all(svc.join("blobs")).unwrap();
    std::fs::write(svc.join("blobs/r2"), b"0123456789").unwrap();
    let toml = svc.join("svc.toml");
    std::fs::write(&toml, SMALL).unwrap();
    let c = ServiceCatalogue::load(&toml).unwrap();
    assert!(c.base_dir.is_absolute());
    assert_eq!(c.content(c.resource("r2").unwrap()).unwrap(), b"0123456789");

    // From another working directory's point of view the path is still the TOML file's.
    let elsewhere = dir.path().join("other");
    std::fs::create_dir(&elsewhere).unwrap();
    let expect = |r: Result<ServiceCatalogue, MetadataError>, want: &str| match r {
        Err(MetadataError::Invalid {
            file,
            line,
            field,
            problem,
        }) => {
            let message = problem.to_string();
            assert!(file.ends_with("svc.toml"), "{file}");
            assert_eq!((line, field), (35, "resources.origin.path"), "{message}");
            assert!(message.contains(want), "{message}");
        }
        other => panic!("want Invalid, got {other:?}"),
    };
    let missing = ServiceCatalogue::from_toml_str(SMALL, "svc.toml", &elsewhere);
    let err = missing.as_ref().unwrap_err().to_string();
    assert!(
        err.starts_with("svc.toml:35: field `resources.origin.path`: cannot read ")
            && err.contains(&format!(
                "{} (relative to the metadata file's directory {})",
                elsewhere.join("blobs/r2").display(),
                elsewhere.display()
            )),
        "{err}"
    );
    expect(missing, "No such file");

    std::fs::remove_file(svc.join("blobs/r2")).unwrap();
    expect(ServiceCatalogue::load(&toml), "cannot read");
    std::fs::create_dir(svc.join("blobs/r2")).unwrap();
    expect(ServiceCatalogue::load(&toml), "not a regular file");
    std::fs::remove_dir(svc.join("blobs/r2")).unwrap();
    std::fs::write(svc.join("blobs/r2"), b"012").unwrap();
    expect(
        ServiceCatalogue::load(&toml),
        "has 3 bytes but the resource's size is 10",
    );

    // An absolute path is taken as it is.
    let abs = dir.path().join("abs-blob");
    std::fs::write(&abs, [7u8; 10]).unwrap();
    let text = SMALL.replace("\"blobs/r2\"", &format!("{:?}", abs.display().to_string()));
    let c = ServiceCatalogue::from_toml_str(&text, "svc.toml", &elsewhere).unwrap();
    assert_eq!(c.content(c.resource("r2").unwrap()).unwrap(), [7u8; 10]);
}

#[test]
fn a_resource_of_size_zero_is_refused() {
    for zero in ["size = 0", "size = \"0 KiB\"", "size = \"0\""] {
        let (line, field, msg) = invalid(&SMALL.replace("size = \"2 KiB\"", zero));
        assert_eq!((line, field), (27, "resources.size"), "{zero}");
        assert!(
            msg.contains("\"r1\" has size 0; a resource is at least one byte"),
            "{zero}: {msg}"
        );
    }
    let err = parse(&SMALL.replace("size = 10", "size = 0")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "svc.toml:33: field `resources.size`: resource \"r2\" has size 0; a resource is at least one byte"
    );
}
