//! Static files on the public listener: the reference browser client under
//! `/client/` (the module and its TypeScript declarations) and, when `demo` is
//! on, the demo page at `/`.
//!
//! The files live in `gateway/assets/` and are compiled into the binary with
//! `include_str!`, so the gateway image needs nothing beside it. Each response
//! carries a strong `ETag` (a hash of the file), and a request whose
//! `If-None-Match` names it gets `304 Not Modified`: browsers revalidate cheaply.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::app::AppState;

/// One embedded file and how it is served.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    /// The client is fetched by every page load of every application that uses
    /// it, so it may be cached briefly; the demo page always revalidates.
    cache_control: &'static str,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(
        body: &'static str,
        content_type: &'static str,
        cache_control: &'static str,
    ) -> Self {
        Self {
            body,
            content_type,
            cache_control,
            etag: OnceLock::new(),
        }
    }

    /// `"<first 16 bytes of the body's SHA-256, in hex>"`, computed once.
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.body.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            // Quotes and hex digits: always a valid header value.
            HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
        })
    }

    /// The file, or `304` when the request's `If-None-Match` names its `ETag`.
    fn serve(&self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let headers = [
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(self.cache_control),
            ),
            (header::ETAG, etag.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|tag| tag.trim() == "*" || tag.trim() == etag);
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (
            headers,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            )],
            self.body,
        )
            .into_response()
    }
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The reference client, an ES module (docs/client.md).
static CLIENT: Asset = Asset::new(
    include_str!("../assets/wsgate.js"),
    JAVASCRIPT,
    "public, max-age=300",
);
/// The client's TypeScript declarations, for applications that type-check
/// against the client they load from the gateway (docs/client.md).
static CLIENT_TYPES: Asset = Asset::new(
    include_str!("../assets/wsgate.d.ts"),
    "application/typescript; charset=utf-8",
    "public, max-age=300",
);
static DEMO_PAGE: Asset = Asset::new(
    include_str!("../assets/demo/index.html"),
    "text/html; charset=utf-8",
    "no-cache",
);
static DEMO_SCRIPT: Asset = Asset::new(
    include_str!("../assets/demo/app.js"),
    JAVASCRIPT,
    "no-cache",
);
static DEMO_STYLE: Asset = Asset::new(
    include_str!("../assets/demo/style.css"),
    "text/css; charset=utf-8",
    "no-cache",
);

/// The demo page loads only its own files and talks only WebSocket (to any
/// replica named in `?ws=`).
const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Routes for the browser client and, when `demo` is on, the demo page.
pub fn router(state: &AppState) -> Router<Arc<AppState>> {
    let router = Router::new()
        .route(
            "/client/wsgate.js",
            get(|headers: HeaderMap| async move { CLIENT.serve(&headers) }),
        )
        .route(
            "/client/wsgate.d.ts",
            get(|headers: HeaderMap| async move { CLIENT_TYPES.serve(&headers) }),
        );
    if !state.config.demo {
        return router;
    }
    router
        .route(
            "/",
            get(|headers: HeaderMap| async move {
                let mut response = DEMO_PAGE.serve(&headers);
                response.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(DEMO_CSP),
                );
                response
            }),
        )
        .route(
            "/demo/app.js",
            get(|headers: HeaderMap| async move { DEMO_SCRIPT.serve(&headers) }),
        )
        .route(
            "/demo/style.css",
            get(|headers: HeaderMap| async move { DEMO_STYLE.serve(&headers) }),
        )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::body::{Body, to_bytes};
    use axum::http::{HeaderName, Request};
    use tower::ServiceExt;

    use super::*;

    fn app(demo: bool) -> Router {
        let text = format!("version = 1\ndemo = {demo}\n");
        let config = wsgate_config::Config::from_toml(&text, Path::new("test.toml")).unwrap();
        let state = AppState::test(config);
        router(&state).with_state(state)
    }

    async fn get(app: Router, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        app.oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body(response: Response) -> String {
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header(response: &Response, name: HeaderName) -> &str {
        response.headers()[name].to_str().unwrap()
    }

    /// The client is served whether or not the demo is on, as JavaScript with a cache header.
    #[tokio::test]
    async fn client_is_served_as_javascript_with_a_cache_header() {
        for demo in [false, true] {
            let response = get(app(demo), "/client/wsgate.js", &[]).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                "text/javascript; charset=utf-8"
            );
            assert_eq!(
                header(&response, header::CACHE_CONTROL),
                "public, max-age=300"
            );
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert!(body(response).await.contains("export class WsgateClient"));
        }
    }

    /// The declarations are served beside the client, whether or not the demo is on.
    #[tokio::test]
    async fn client_types_are_served_beside_the_client() {
        for demo in [false, true] {
            let response = get(app(demo), "/client/wsgate.d.ts", &[]).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                "application/typescript; charset=utf-8"
            );
            assert!(
                body(response)
                    .await
                    .contains("export declare class WsgateClient")
            );
        }
    }

    /// The names a module exports: `export class X`, `export declare function X`, ...
    fn exports(source: &str) -> Vec<&str> {
        let mut names: Vec<&str> = source
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .map(|line| {
                line.trim_start_matches("declare ")
                    .trim_start_matches("async ")
            })
            .filter_map(|line| {
                let (kind, rest) = line.split_once(' ')?;
                matches!(kind, "class" | "function" | "const").then_some(rest)
            })
            .filter_map(|rest| {
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
            })
            .collect();
        names.sort_unstable();
        names
    }

    /// Every value the client exports is declared, and nothing else: the
    /// declarations cannot silently fall behind the module.
    #[test]
    fn the_declarations_cover_every_export_of_the_client() {
        let module = exports(CLIENT.body);
        assert_eq!(
            module,
            [
                "State",
                "WsgateClient",
                "WsgateError",
                "connect",
                "tokenExpiry"
            ]
        );
        assert_eq!(exports(CLIENT_TYPES.body), module);
    }

    /// The npm package ships the module and the declarations at the gateway's
    /// version, so it can be vendored or published as it is.
    #[test]
    fn the_package_names_the_client_and_its_declarations_at_the_gateway_version() {
        let package: serde_json::Value =
            serde_json::from_str(include_str!("../assets/package.json")).unwrap();
        assert_eq!(package["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(package["type"], "module");
        assert_eq!(package["main"], "./wsgate.js");
        assert_eq!(package["types"], "./wsgate.d.ts");
        assert_eq!(package["exports"]["."]["types"], "./wsgate.d.ts");
        assert_eq!(package["exports"]["."]["default"], "./wsgate.js");
        assert_eq!(
            package["files"],
            serde_json::json!(["wsgate.js", "wsgate.d.ts"])
        );
    }

    /// A browser that has the current version gets 304 without a body.
    #[tokio::test]
    async fn a_matching_etag_is_answered_not_modified() {
        let response = get(app(false), "/client/wsgate.js", &[]).await;
        let etag = header(&response, header::ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34);

        let response = get(app(false), "/client/wsgate.js", &[("if-none-match", &etag)]).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&response, header::ETAG), etag);
        assert!(body(response).await.is_empty());

        let stale = get(
            app(false),
            "/client/wsgate.js",
            &[("if-none-match", "\"stale\"")],
        )
        .await;
        assert_eq!(stale.status(), StatusCode::OK);
    }

    /// Without `demo`, `/` and the demo's files are not there.
    #[tokio::test]
    async fn demo_page_is_absent_unless_enabled() {
        for uri in ["/", "/demo/app.js", "/demo/style.css"] {
            let response = get(app(false), uri, &[]).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }

    /// With `demo`, `/` is the page, with a content security policy, and every
    /// same-origin file it and its script reference is served with a fitting type.
    #[tokio::test]
    async fn demo_page_and_everything_it_references_are_served_when_enabled() {
        let response = get(app(true), "/", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert!(header(&response, header::CONTENT_SECURITY_POLICY).contains("connect-src"));
        let page = body(response).await;
        let script = body(get(app(true), "/demo/app.js", &[]).await).await;

        let mut references: Vec<&str> = page
            .split(['"', '\''])
            .filter(|part| part.starts_with('/') && !part.starts_with("//"))
            .collect();
        references.extend(
            script
                .split('"')
                .filter(|part| part.starts_with("/client/") || part.starts_with("/demo/")),
        );
        assert!(references.contains(&"/demo/app.js"));
        assert!(references.contains(&"/demo/style.css"));
        assert!(references.contains(&"/client/wsgate.js"));
        for uri in references {
            let response = get(app(true), uri, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            let expected = match uri.rsplit('.').next() {
                Some("js") => JAVASCRIPT,
                Some("css") => "text/css; charset=utf-8",
                _ => continue,
            };
            assert_eq!(header(&response, header::CONTENT_TYPE), expected, "{uri}");
        }
    }
}
