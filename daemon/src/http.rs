//! The front door: an HTTP/1.1 JSON API (axum) over the engine. Routes and statuses are in
//! docs/openapi.json; a request is validated here (body size here, then JSON, fields, bounds,
//! app and type by `see_api::parse_run_request`) and handed to the engine, whose answer it
//! waits for.

use std::{
    collections::HashMap,
    sync::{mpsc::Sender, Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, Path, State as Extract},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};

use crate::{
    api::{parse_run_request, Health, RunRequest},
    engine::{Input, Job},
    service::{ApiError, Shared, State},
};

/// What the handlers need.
#[derive(Clone, Debug)]
pub struct Door {
    /// Shared with the engine.
    pub shared: Arc<Shared>,
    /// To the engine.
    pub engine: Arc<Mutex<Sender<Input>>>,
    /// Request type -> its app, from the service metadata.
    pub types: Arc<HashMap<String, String>>,
    /// The predictor's name.
    pub predictor: String,
    /// Largest body.
    pub body_limit: usize,
    /// Longest wait for the engine's answer.
    pub answer_timeout: Duration,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The router.
pub fn router(door: Door) -> Router {
    let limit = door.body_limit;
    Router::new()
        .route("/v1/requests", post(run))
        .route("/v1/sessions/{session}", delete(end_session))
        .route("/v1/health", get(health))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route: see docs/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route: see docs/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(door)
}

impl ApiError {
    fn new_status(status: StatusCode, why: &str) -> Self {
        let mut e = ApiError::bad_request(why);
        e.status = status;
        e
    }
}

impl Door {
    fn send(&self, input: Input) -> bool {
        self.engine
            .lock()
            .map(|s| s.send(input).is_ok())
            .unwrap_or(false)
    }

    /// Checks a request body; the error names what is wrong.
    fn parse(&self, body: Result<Bytes, BytesRejection>) -> Result<RunRequest, ApiError> {
        let body = body.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(self.body_limit)
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        Ok(parse_run_request(&body, &self.types)?)
    }
}

async fn run(
    Extract(door): Extract<Door>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let request = match door.parse(body) {
        Ok(r) => r,
        Err(e) => {
            door.shared.metrics.count(e.outcome());
            return Err(e);
        }
    };
    let refused = match door.shared.state() {
        State::Down(why) => Some(why),
        State::Stopping => Some("the daemon is shutting down".to_owned()),
        State::Starting | State::Ready => None,
    };
    if let Some(why) = refused {
        door.shared.metrics.count("unavailable");
        return Err(ApiError::unavailable(&why));
    }
    if !door.shared.reserve() {
        door.shared.metrics.count("rejected");
        return Err(ApiError::busy(door.shared.capacity()));
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !door.send(Input::Run(Job {
        request,
        arrived,
        reply,
    })) {
        door.shared.release();
        return Err(ApiError::unavailable("the PTO engine has stopped"));
    }
    match tokio::time::timeout(door.answer_timeout, answer).await {
        Ok(Ok(Ok(response))) => Ok(Json(response).into_response()),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ApiError::unavailable("the PTO engine stopped")),
        Err(_) => Err(ApiError::unavailable(
            "no answer from the PTO engine in time",
        )),
    }
}

async fn end_session(
    Extract(door): Extract<Door>,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !door.send(Input::EndSession(session.clone(), reply)) {
        return Err(ApiError::unavailable("the PTO engine has stopped"));
    }
    match answer.await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(format!("no live session {session:?}"))),
        Err(_) => Err(ApiError::unavailable("the PTO engine stopped")),
    }
}

async fn health(Extract(door): Extract<Door>) -> Response {
    let (status, reason, code) = match door.shared.state() {
        State::Starting => ("starting", None, StatusCode::OK),
        State::Ready => ("ready", None, StatusCode::OK),
        State::Stopping => ("stopping", None, StatusCode::SERVICE_UNAVAILABLE),
        State::Down(why) => ("down", Some(why), StatusCode::SERVICE_UNAVAILABLE),
    };
    let body = Health {
        status: status.into(),
        reason,
        predictor: door.predictor.clone(),
        queued: door.shared.queued() as u64,
    };
    (code, Json(body)).into_response()
}

async fn stats(Extract(door): Extract<Door>) -> Response {
    Json(door.shared.stats()).into_response()
}

async fn metrics(Extract(door): Extract<Door>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        door.shared.metrics.render(),
    )
        .into_response()
}
