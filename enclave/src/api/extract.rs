//! Request bodies and request ids, with wire errors for bad input.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::error::EnclaveError;

/// JSON body extractor whose rejections are wire errors (`INVALID_REQUEST`,
/// `PAYLOAD_TOO_LARGE`) instead of axum's plain-text ones.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let request_id = header_request_id(req.headers());
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let error = if rejection.status().as_u16() == 413 {
                    EnclaveError::PayloadTooLarge
                } else {
                    let mut text = rejection.body_text();
                    text.truncate(200);
                    EnclaveError::InvalidRequest(text)
                };
                Err(error.into_response_with(request_id))
            }
        }
    }
}

/// The `x-request-id` header (at most 128 characters), used when the body carries no
/// `requestId`.
pub struct HeaderRequestId(pub Option<String>);

fn header_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect())
}

impl<S: Send + Sync> FromRequestParts<S> for HeaderRequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(HeaderRequestId(header_request_id(&parts.headers)))
    }
}

impl HeaderRequestId {
    /// The request id to echo: the body's, else the header's.
    pub fn or_body(self, body: &Option<String>) -> Option<String> {
        body.clone().or(self.0)
    }
}
