//! Request parsing and response building shared by every HTTP function.

use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ApiError;

pub type ApiResult = Result<Response<Body>, ApiError>;

/// Default cap for JSON bodies: far above any legitimate request of ours, far below Lambda's 6 MB.
pub const MAX_JSON_BODY: usize = 64 * 1024;

pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// Parses a JSON body, refusing other content types, oversized bodies and malformed JSON with
/// errors that say which.
pub fn json_body<T: DeserializeOwned>(req: &Request, max: usize) -> Result<T, ApiError> {
    let bytes = body_bytes(req);
    if bytes.len() > max {
        return Err(ApiError::payload_too_large(max));
    }
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json",
        ));
    }
    // serde reads a struct from a JSON array too (`[null, null]`); every body of ours is an object.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request("invalid_json", "The body must be a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("invalid_json", format!("Invalid JSON body: {e}")))
}

/// Like [`json_body`] but an absent body is `None` (endpoints that also accept cookies).
pub fn optional_json_body<T: DeserializeOwned>(req: &Request, max: usize) -> Result<Option<T>, ApiError> {
    if body_bytes(req).iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    json_body(req, max).map(Some)
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> ApiResult {
    let body = serde_json::to_string(value).map_err(ApiError::internal)?;
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .map_err(ApiError::internal)
}

/// Adds `Set-Cookie` headers to a response.
pub fn with_cookies(mut response: Response<Body>, cookies: &[String]) -> ApiResult {
    for cookie in cookies {
        response.headers_mut().append(SET_COOKIE, cookie.parse().map_err(ApiError::internal)?);
    }
    Ok(response)
}

/// Identifiers (path and query) longer than this name nothing of ours, and DynamoDB refuses keys
/// past its limits: they are answered as not found (path) or invalid (query), never a 500.
pub const MAX_ID_BYTES: usize = 256;

/// A path parameter of the route (`{name}` in template.yaml); empty when absent or longer than
/// [`MAX_ID_BYTES`] (so it is looked up as nothing, and not found).
pub fn path_param(req: &Request, name: &str) -> String {
    let value = req.path_parameters_ref().and_then(|p| p.first(name)).unwrap_or_default();
    if value.len() > MAX_ID_BYTES { String::new() } else { value.to_string() }
}

/// A query parameter; an empty value counts as absent.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref().and_then(|q| q.first(name)).map(str::to_string).filter(|v| !v.is_empty())
}

/// A query parameter as sent, an empty value included (for enumerations, where empty is a wrong value).
pub fn query_raw(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref().and_then(|q| q.first(name)).map(str::to_string)
}

/// An identifier in the query (`organization_id`, `school_id`...): `400 invalid_query` when longer
/// than [`MAX_ID_BYTES`].
pub fn query_id(req: &Request, name: &str) -> Result<Option<String>, ApiError> {
    match query_param(req, name) {
        Some(v) if v.len() > MAX_ID_BYTES => {
            Err(ApiError::bad_request("invalid_query", format!("{name} is longer than {MAX_ID_BYTES} bytes")))
        }
        other => Ok(other),
    }
}

/// An integer query parameter; `400 invalid_query` when it is not one (an empty value included).
pub fn query_number(req: &Request, name: &str) -> Result<Option<i64>, ApiError> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .map(|v| v.parse().map_err(|_| ApiError::bad_request("invalid_query", format!("{name} must be an integer"))))
        .transpose()
}

/// A page size from the `limit` query parameter: `default` when absent, `400 invalid_query` outside
/// 1 to `max`.
pub fn query_limit(req: &Request, default: usize, max: usize) -> Result<usize, ApiError> {
    match query_number(req, "limit")? {
        None => Ok(default),
        Some(n) if (1..=max as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::bad_request("invalid_query", format!("limit is 1 to {max}"))),
    }
}

/// The caller's address as API Gateway saw it. Headers such as `X-Forwarded-For` are not trusted.
pub fn client_ip(req: &Request) -> String {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "unknown".to_string())
}

/// The value of a request cookie (API Gateway v2 passes cookies joined in one `Cookie` header).
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A cookie that only our server reads: httpOnly, Secure, SameSite.
pub fn secure_cookie(name: &str, value: &str, path: &str, max_age: i64, same_site: &str) -> String {
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; SameSite={same_site}")
}

/// A 302 that is never cached and sends no `Referer` on (codes and tokens in the URL it leaves stay
/// out of the next site's logs), with cookies to set.
pub fn redirect_no_referrer(location: &str, cookies: &[String]) -> ApiResult {
    let mut b = Response::builder()
        .status(http::StatusCode::FOUND)
        .header(http::header::LOCATION, location)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::REFERRER_POLICY, "no-referrer");
    for c in cookies {
        b = b.header(http::header::SET_COOKIE, c);
    }
    b.body(lambda_http::Body::Empty).map_err(crate::ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], body: &str) -> Request {
        let mut b = http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::from(body)).unwrap()
    }

    #[test]
    fn cookies_are_found_among_several() {
        let req = request(&[("cookie", "a=1; __Host-hub_access=tok.en; b=2")], "");
        assert_eq!(cookie(&req, "__Host-hub_access").as_deref(), Some("tok.en"));
        assert_eq!(cookie(&req, "missing"), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(&request(&[("authorization", "bearer abc")], "")), Some("abc"));
        assert_eq!(bearer_token(&request(&[("authorization", "Basic abc")], "")), None);
        assert_eq!(bearer_token(&request(&[("authorization", "Bearer ")], "")), None);
    }

    #[test]
    fn json_bodies_are_checked_for_type_size_and_syntax() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            a: u8,
        }
        let ok = request(&[("content-type", "application/json; charset=utf-8")], r#"{"a":1}"#);
        assert!(json_body::<T>(&ok, 100).is_ok());
        let wrong_type = request(&[("content-type", "text/plain")], r#"{"a":1}"#);
        assert_eq!(json_body::<T>(&wrong_type, 100).unwrap_err().status, 415);
        let too_big = request(&[("content-type", "application/json")], r#"{"a":1}"#);
        assert_eq!(json_body::<T>(&too_big, 3).unwrap_err().status, 413);
        let bad = request(&[("content-type", "application/json")], r#"{"a":"x"}"#);
        assert_eq!(json_body::<T>(&bad, 100).unwrap_err().code, "invalid_json");
        let array = request(&[("content-type", "application/json")], "[1]");
        assert_eq!(json_body::<T>(&array, 100).unwrap_err().code, "invalid_json");
        let empty = request(&[], " ");
        assert!(optional_json_body::<T>(&empty, 100).unwrap().is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_header_values_parse_or_are_ignored(value in "[ -~]{0,200}") {
            let req = request(&[("cookie", value.as_str()), ("authorization", value.as_str())], "");
            let _ = cookie(&req, "__Host-hub_access");
            if let Some(token) = bearer_token(&req) {
                proptest::prop_assert!(!token.is_empty());
            }
        }
    }
}
