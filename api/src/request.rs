//! The check of a `POST /v1/requests` body: JSON with exactly the fields of [`RunRequest`], a
//! session key and names within their bounds, and a request type the service metadata
//! describes for the app named. Pure: no I/O, no allocation beyond the parsed request and the
//! error, and work bounded by the body's length (the caller bounds that: the daemon's
//! `body_limit`).

use std::collections::HashMap;

use crate::body::{RunRequest, MAX_NAME_LEN, MAX_SESSION_LEN};

/// Why a request body was refused; the message is what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, not an object, a field missing, unknown, repeated or of the wrong type (the
    /// message names it).
    #[error("malformed request: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The session key is empty, too long or holds a control character.
    #[error("field `session` must be 1 to {MAX_SESSION_LEN} bytes without control characters")]
    BadSession,
    /// The app or request type name is empty, too long or holds a control character.
    #[error("field `{0}` must be 1 to {MAX_NAME_LEN} bytes without control characters")]
    BadName(&'static str),
    /// The service metadata describes no request type of this name.
    #[error("unknown request type {0:?}: the service metadata does not describe it")]
    UnknownType(String),
    /// No request type of the service metadata belongs to this app.
    #[error("unknown app {0:?}")]
    UnknownApp(String),
    /// The request type exists, but belongs to another app.
    #[error("app {app:?} has no request type {kind:?} (it belongs to app {owner:?})")]
    WrongApp {
        /// The app the client named.
        app: String,
        /// The request type the client named.
        kind: String,
        /// The app the request type belongs to.
        owner: String,
    },
}

/// True for a string of 1 to `max` bytes without control characters.
fn within(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// Parses and checks a `POST /v1/requests` body against `types`, the service metadata's
/// request types, each mapped to the app it belongs to. On `Ok`, the session key is 1 to
/// [`MAX_SESSION_LEN`] bytes and the names 1 to [`MAX_NAME_LEN`] bytes, none with control
/// characters, and `types[request.kind] == request.app`.
pub fn parse_run_request(
    body: &[u8],
    types: &HashMap<String, String>,
) -> Result<RunRequest, RequestError> {
    let request: RunRequest = serde_json::from_slice(body).map_err(RequestError::Malformed)?;
    if !within(&request.session, MAX_SESSION_LEN) {
        return Err(RequestError::BadSession);
    }
    if !within(&request.app, MAX_NAME_LEN) {
        return Err(RequestError::BadName("app"));
    }
    if !within(&request.kind, MAX_NAME_LEN) {
        return Err(RequestError::BadName("type"));
    }
    match types.get(&request.kind) {
        None => Err(RequestError::UnknownType(request.kind)),
        Some(owner) if *owner != request.app => {
            if types.values().any(|a| *a == request.app) {
                Err(RequestError::WrongApp {
                    app: request.app,
                    kind: request.kind,
                    owner: owner.clone(),
                })
            } else {
                Err(RequestError::UnknownApp(request.app))
            }
        }
        Some(_) => Ok(request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{MAX_ATTRIBUTES, MAX_ATTRIBUTE_LEN};

    fn types() -> HashMap<String, String> {
        [("home", "shop"), ("cart", "shop"), ("balance", "bank")]
            .into_iter()
            .map(|(t, a)| (t.to_owned(), a.to_owned()))
            .collect()
    }

    fn parse(body: &str) -> Result<RunRequest, RequestError> {
        parse_run_request(body.as_bytes(), &types())
    }

    fn body(session: &str, app: &str, kind: &str) -> String {
        serde_json::json!({ "session": session, "app": app, "type": kind }).to_string()
    }

    fn message(body: &str) -> String {
        parse(body).expect_err("refused").to_string()
    }

    #[test]
    fn a_good_request_parses() {
        let r = parse(r#"{"session":"s1","app":"shop","type":"home"}"#).expect("valid");
        assert_eq!(
            r,
            RunRequest {
                session: "s1".into(),
                app: "shop".into(),
                kind: "home".into(),
                attributes: Default::default(),
            }
        );
        // Field order and white space do not matter; a multi-byte key within the bound is fine.
        let r = parse(" {\"type\":\"balance\",\n\"app\":\"bank\",\"session\":\"über\"} ")
            .expect("valid");
        assert_eq!((r.app.as_str(), r.kind.as_str()), ("bank", "balance"));
    }

    #[test]
    fn malformed_json_is_refused_and_named() {
        for (bad, names) in [
            (r#"{"session": "x", "app": "#, "EOF"),
            ("", "EOF"),
            ("[]", "struct RunRequest"),
            (
                r#"{"session":"x","app":"shop","type":"home","colour":"red"}"#,
                "colour",
            ),
            (r#"{"session":"x","app":"shop"}"#, "`type`"),
            (r#"{"session":"x","app":"shop","type":7}"#, "invalid type"),
            (
                r#"{"session":"x","session":"y","app":"shop","type":"home"}"#,
                "duplicate field `session`",
            ),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(matches!(e, RequestError::Malformed(_)), "{bad}: {e:?}");
            let m = e.to_string();
            assert!(m.starts_with("malformed request: "), "{m}");
            assert!(m.contains(names), "{bad}: {m}");
        }
        assert!(matches!(
            parse_run_request(b"{\"session\":\"\xff\"}", &types()),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn the_session_key_is_bounded() {
        let longest = "k".repeat(MAX_SESSION_LEN);
        assert!(parse(&body(&longest, "shop", "home")).is_ok());
        // 127 bytes and one two-byte character: over the bound in bytes.
        let over = format!("{}é", "k".repeat(MAX_SESSION_LEN - 1));
        for bad in ["", "a\nb", "\u{7f}", "x\u{0}", over.as_str()] {
            let e = parse(&body(bad, "shop", "home")).expect_err(bad);
            assert!(matches!(e, RequestError::BadSession), "{bad:?}: {e:?}");
        }
        assert_eq!(
            message(&body("", "shop", "home")),
            "field `session` must be 1 to 128 bytes without control characters"
        );
    }

    #[test]
    fn names_are_bounded_before_lookup() {
        let longest = "t".repeat(MAX_NAME_LEN);
        let too_long = "t".repeat(MAX_NAME_LEN + 1);
        // Within the bound, an unknown name is looked up and not found.
        assert!(matches!(
            parse(&body("s", "shop", &longest)),
            Err(RequestError::UnknownType(t)) if t == longest
        ));
        for (app, kind, field) in [
            ("shop", too_long.as_str(), "type"),
            ("shop", "", "type"),
            ("shop", "home\t", "type"),
            (too_long.as_str(), "home", "app"),
            ("", "home", "app"),
            ("sh\u{85}op", "home", "app"),
        ] {
            let e = parse(&body("s", app, kind)).expect_err(kind);
            assert!(
                matches!(e, RequestError::BadName(f) if f == field),
                "{app:?} {kind:?}: {e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!("field `{field}` must be 1 to 128 bytes without control characters")
            );
        }
    }

    #[test]
    fn attributes_are_optional_and_bounded() {
        let r = parse(r#"{"session":"s","app":"shop","type":"home","attributes":{"platform":"web","cohort":""}}"#)
            .expect("valid");
        assert_eq!(r.attributes["platform"], "web");
        assert_eq!(r.attributes["cohort"], "");
        let with = |attrs: serde_json::Value| {
            serde_json::json!({"session":"s","app":"shop","type":"home","attributes":attrs})
                .to_string()
        };
        let most: serde_json::Map<String, serde_json::Value> = (0..MAX_ATTRIBUTES)
            .map(|i| (format!("a{i}"), "v".into()))
            .collect();
        assert_eq!(
            parse(&with(most.clone().into())).unwrap().attributes.len(),
            MAX_ATTRIBUTES
        );
        let mut over = most;
        over.insert("z".into(), "v".into());
        for (bad, says) in [
            (with(over.into()), "more than"),
            (with(serde_json::json!({"": "v"})), "a name must be"),
            (
                with(serde_json::json!({"k".repeat(MAX_ATTRIBUTE_LEN + 1): "v"})),
                "a name must be",
            ),
            (
                with(serde_json::json!({"k": "v".repeat(MAX_ATTRIBUTE_LEN + 1)})),
                "a value must be",
            ),
            (with(serde_json::json!({"k": "a\u{7}"})), "a value must be"),
            (with(serde_json::json!({"k": 1})), "invalid type"),
            (with(serde_json::json!(["k"])), "a map of at most"),
            (
                r#"{"session":"s","app":"shop","type":"home","attributes":{"k":"a","k":"b"}}"#
                    .to_owned(),
                "appears twice",
            ),
        ] {
            let m = message(&bad);
            assert!(m.contains(says), "{bad}: {m}");
            assert!(m.starts_with("malformed request"), "{m}");
        }
        // Without attributes the field is left out of the JSON, as older clients send it.
        let json = serde_json::to_string(&parse(&body("s", "shop", "home")).unwrap()).unwrap();
        assert!(!json.contains("attributes"), "{json}");
    }

    #[test]
    fn an_unknown_type_is_named() {
        let e = parse(&body("x", "shop", "teleport")).expect_err("unknown");
        assert_eq!(
            e.to_string(),
            r#"unknown request type "teleport": the service metadata does not describe it"#
        );
    }

    #[test]
    fn an_unknown_app_is_named() {
        let e = parse(&body("x", "casino", "home")).expect_err("unknown");
        assert!(matches!(&e, RequestError::UnknownApp(a) if a == "casino"));
        assert_eq!(e.to_string(), r#"unknown app "casino""#);
    }

    #[test]
    fn a_type_of_another_app_names_its_owner() {
        let e = parse(&body("x", "bank", "home")).expect_err("wrong app");
        assert_eq!(
            e.to_string(),
            r#"app "bank" has no request type "home" (it belongs to app "shop")"#
        );
    }

    /// The fuzz target's seeds (`fuzz/seeds/api_request/`): each file's name says the outcome
    /// it must have (`ok_`, `malformed_`, `bad_session_`, `bad_name_`, `unknown_type`,
    /// `unknown_app`, `wrong_app`), against the types the target knows (`home` and
    /// `payment_details` of `shop`, and a type of `bank`).
    #[test]
    fn the_fuzz_seeds_have_the_outcomes_their_names_say() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/api_request");
        let types: HashMap<String, String> = [
            ("home", "shop"),
            ("payment_details", "shop"),
            ("statement", "bank"),
        ]
        .into_iter()
        .map(|(t, a)| (t.to_owned(), a.to_owned()))
        .collect();
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/api_request") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).expect("name");
            let result = parse_run_request(&std::fs::read(&path).expect("seed"), &types);
            let right = match name {
                n if n.starts_with("ok_") => result.is_ok(),
                n if n.starts_with("malformed_") => {
                    matches!(result, Err(RequestError::Malformed(_)))
                }
                n if n.starts_with("bad_session_") => {
                    matches!(result, Err(RequestError::BadSession))
                }
                n if n.starts_with("bad_name_") => matches!(result, Err(RequestError::BadName(_))),
                "unknown_type" => matches!(result, Err(RequestError::UnknownType(_))),
                "unknown_app" => matches!(result, Err(RequestError::UnknownApp(_))),
                "wrong_app" => matches!(result, Err(RequestError::WrongApp { .. })),
                other => panic!("seed {other}: its name does not say its outcome"),
            };
            assert!(right, "seed {name}: {result:?}");
            seen += 1;
        }
        assert!(seen >= 10, "{seen} seeds");
    }
}
