//! The request API's JSON bodies (docs/openapi.json describes the same), shared by the server
//! and its clients (the demo's load generator, the tests). They live in `see-api`, with the
//! front door's check of a request body, so that the check can be fuzzed without the daemon.

pub use see_api::*;
