//! A bridge's certificate on its edit page: its health as this peer sees it (a refused
//! certificate says why), the pinned fingerprint, the one it presented at its last TLS
//! handshake, and "Trust this certificate", which pins what the operator compared in one step.

use super::{OperatorForm, WebUser, csrf_input, esc, form_value, see_other, url_encode};
use crate::adapters::api::ApiError;
use crate::services::{App, records};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use model::record::Bridge;
use std::fmt::Write as _;
use std::sync::Arc;

/// The form field carrying the fingerprint the operator was shown.
const SHA256_FIELD: &str = "sha256";

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route("/bridges/{name}/trust", post(trust))
}

/// The Certificate section of `bridge`'s page.
pub(super) fn section(app: &App, user: &WebUser, bridge: &Bridge) -> String {
    let mut body = String::from("<h2>Certificate</h2><table><tbody>");
    let health = if !bridge.enabled {
        "<span class=\"pending\">Disabled</span>".to_owned()
    } else if app.policy.health.is_up(bridge) {
        "<span class=\"ok\">In service</span>".to_owned()
    } else {
        let problem = app.policy.health.problems().remove(&bridge.name).unwrap_or_default();
        format!("<span class=\"bad\" id=\"bridge-problem\">Down: {}</span>", esc(&problem))
    };
    let _ = write!(
        body,
        "<tr><th scope=\"row\">Health (seen from this peer)</th><td>{health}</td></tr>"
    );
    let pinned = match &bridge.pinned_sha256 {
        Some(pin) => {
            format!("<code class=\"fingerprint\" id=\"pinned-fingerprint\">{}</code>", esc(pin))
        }
        None => {
            "None: verified against the trusted CAs (System &gt; Security certificates)".to_owned()
        }
    };
    let _ =
        write!(body, "<tr><th scope=\"row\">Pinned SHA-256 fingerprint</th><td>{pinned}</td></tr>");
    let presented = app.policy.presented_fingerprint(bridge);
    let shown = match &presented {
        Some(fingerprint) => format!(
            "<code class=\"fingerprint\" id=\"presented-fingerprint\">{}</code>",
            esc(fingerprint)
        ),
        None => "None yet (no TLS handshake with this bridge from this peer)".to_owned(),
    };
    let _ = write!(
        body,
        "<tr><th scope=\"row\">Presented SHA-256 fingerprint</th><td>{shown}</td></tr></tbody></table>"
    );
    let already = presented.as_deref().zip(bridge.pinned_sha256.as_deref()).is_some_and(
        |(presented, pinned)| {
            model::validate::sha256_fingerprint(presented)
                == model::validate::sha256_fingerprint(pinned)
        },
    );
    if let Some(presented) = presented.filter(|_| !already) {
        let _ = write!(
            body,
            "<p class=\"hint\">Compare the presented fingerprint with the one the bridge shows \
             (on its own web interface). If they match, trust it: from \
             then on only this certificate is accepted from the bridge.</p>\
             <form method=\"post\" action=\"/bridges/{}/trust\">{}\
             <input type=\"hidden\" name=\"{SHA256_FIELD}\" value=\"{}\">\
             <button type=\"submit\" id=\"trust-certificate\">Trust this certificate</button></form>",
            url_encode(&bridge.name),
            csrf_input(user),
            esc(&presented)
        );
    }
    body
}

/// Pins the fingerprint the page showed (refused if the bridge presents another now).
async fn trust(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let expected = form_value(&form, SHA256_FIELD).trim().to_owned();
    let pinned =
        records::pin_presented_certificate(&app, &user.name, name.clone(), Some(expected)).await;
    match pinned.map_err(ApiError::from) {
        Ok(_) => see_other(&format!("/configuration/bridges/{}?saved=1", url_encode(&name))),
        Err(error) => super::error_page(Some(&user), &error),
    }
}
