//! Any bytes as a `POST /v1/requests` body, checked against the shop catalogue's request types
//! (pto/src/catalogue/shop.toml, written out here so the target does not build the PTO) and
//! one type of a second app, so that a type of another app is reachable. The check must never
//! panic; an accepted request must hold a session key and names within their bounds and a
//! type that belongs to its app, and round-trip through JSON; a refusal must be the one the
//! request deserves.

#![no_main]

use std::{collections::HashMap, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use see_api::{
    parse_run_request, RequestError, RunRequest, MAX_ATTRIBUTES, MAX_ATTRIBUTE_LEN, MAX_NAME_LEN,
    MAX_SESSION_LEN,
};

/// The shop catalogue's request types (every one belongs to app `shop`), and one of `bank`.
const TYPES: &[(&str, &str)] = &[
    ("home", "shop"),
    ("search", "shop"),
    ("promo_page", "shop"),
    ("catalog", "shop"),
    ("product_view", "shop"),
    ("filter_results", "shop"),
    ("add_to_cart", "shop"),
    ("cart", "shop"),
    ("shipping_details", "shop"),
    ("payment_details", "shop"),
    ("purchase", "shop"),
    ("wishlist_add", "shop"),
    ("account_page", "shop"),
    ("review_page", "shop"),
    ("compare", "shop"),
    ("support_chat", "shop"),
    ("error_page", "shop"),
    ("payment_error", "shop"),
    ("checkout_bug", "shop"),
    ("statement", "bank"),
];

fn types() -> &'static HashMap<String, String> {
    static TYPES_MAP: OnceLock<HashMap<String, String>> = OnceLock::new();
    TYPES_MAP.get_or_init(|| {
        TYPES
            .iter()
            .map(|&(t, a)| (t.to_owned(), a.to_owned()))
            .collect()
    })
}

fn within(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

fuzz_target!(|data: &[u8]| {
    let types = types();
    match parse_run_request(data, types) {
        Ok(request) => {
            assert!(within(&request.session, MAX_SESSION_LEN), "{request:?}");
            assert!(within(&request.app, MAX_NAME_LEN), "{request:?}");
            assert!(within(&request.kind, MAX_NAME_LEN), "{request:?}");
            assert_eq!(types.get(&request.kind), Some(&request.app));
            assert!(request.attributes.len() <= MAX_ATTRIBUTES, "{request:?}");
            for (k, v) in &request.attributes {
                assert!(within(k, MAX_ATTRIBUTE_LEN), "{request:?}");
                assert!(v.len() <= MAX_ATTRIBUTE_LEN, "{request:?}");
                assert!(!v.chars().any(char::is_control), "{request:?}");
            }
            let json = serde_json::to_vec(&request).expect("serialises");
            let again: RunRequest = serde_json::from_slice(&json).expect("round-trips");
            assert_eq!(again, request);
        }
        Err(e) => {
            match &e {
                RequestError::UnknownType(kind) => assert!(!types.contains_key(kind)),
                RequestError::UnknownApp(app) => assert!(!types.values().any(|a| a == app)),
                RequestError::WrongApp { app, kind, owner } => {
                    assert_eq!(types.get(kind), Some(owner));
                    assert_ne!(app, owner);
                    assert!(types.values().any(|a| a == app));
                }
                RequestError::Malformed(_)
                | RequestError::BadSession
                | RequestError::BadName(_) => {}
            }
            // The message is what the client is told: it must format, and stay within a
            // bound of the input (serde_json quotes what it was given, escaped; names are
            // bounded before they are echoed, and their escapes at most quadruple them).
            let message = e.to_string();
            assert!(
                message.len() <= 4 * data.len() + 8 * MAX_NAME_LEN + 256,
                "{message}"
            );
        }
    }
});
