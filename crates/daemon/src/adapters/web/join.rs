//! Joining a cluster in one flow from the new peer's Clustering page (`cluster_join` does the
//! work, as `POST /api/v1/cluster/join` does): the operator gives a member's URL, the
//! cluster's administrator password and the pre-shared key; the page shows the SHA-256
//! fingerprint of the certificate the member presents and asks the operator to compare it with
//! the member's Status page; only then is the join run, through that certificate alone.
//!
//! Between the two steps the password and key stay in memory on this peer (never in the page),
//! for the session that typed them, for at most [`PENDING_JOIN_TTL_MS`].

use super::{OperatorForm, WebState, WebUser, csrf_input, esc, page};
use crate::adapters::api::ApiError;
use crate::services::cluster_join::JoinRequest;
use crate::services::{App, Error, cluster_join};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use std::fmt::Write as _;
use std::sync::Arc;

/// How long a checked member waits for the operator's confirmation.
const PENDING_JOIN_TTL_MS: u64 = 10 * 60 * 1000;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/system/clustering/join", post(check_member))
        .route("/system/clustering/join/confirm", post(confirm))
}

/// A join whose member certificate the operator has yet to confirm.
pub(crate) struct PendingJoin {
    id: String,
    session: String,
    request: JoinRequest,
    created_ms: u64,
}

/// The one-flow join form, shown on a standalone peer's Clustering page.
pub(super) fn join_form(user: &WebUser, member_url: &str, problem: Option<&str>) -> String {
    let mut html = String::from(
        "<h2>Join an existing cluster</h2><p>From this new peer, in one step: give the address \
         of one member, the cluster's administrator password and its pre-shared key. Every member \
         lists this peer (the others through the certificates the member vouches for, so there \
         is no other page to visit), this peer takes the key and the list, and the page waits \
         until the links are active. Every member must be active. This peer's own shared \
         configuration is replaced by the cluster's.</p>",
    );
    if let Some(problem) = problem {
        html.push_str(&super::error_note(problem));
    }
    let _ = write!(
        html,
        "<form method=\"post\" action=\"/system/clustering/join\" class=\"record\">{}\
         <div class=\"field\"><label for=\"join-member-url\">Member's web address</label>\
         <input type=\"text\" id=\"join-member-url\" name=\"member_url\" value=\"{}\" placeholder=\"https://192.0.2.10\" required aria-describedby=\"join-member-url-help\">\
         <div id=\"join-member-url-help\"><p class=\"hint\">The address you use to reach the member's web interface.</p></div></div>\
         <div class=\"field\"><label for=\"join-password\">The cluster's administrator password</label>\
         <input type=\"password\" id=\"join-password\" name=\"password\" autocomplete=\"off\" required></div>\
         <div class=\"field\"><label for=\"join-key\">Cluster pre-shared key</label>\
         <input type=\"password\" id=\"join-key\" name=\"pre_shared_key\" autocomplete=\"off\" required></div>\
         <button type=\"submit\">Check the member</button></form>",
        csrf_input(user),
        esc(member_url)
    );
    html
}

fn refused(user: &WebUser, member_url: &str, status: StatusCode, problem: &str) -> Response {
    let body = join_form(user, member_url, Some(problem));
    (status, page("Join a cluster", Some(user), &body)).into_response()
}

async fn check_member(
    Extension(web): Extension<Arc<WebState>>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let member_url = super::form_value(&form, "member_url").trim().to_owned();
    let fingerprint = match cluster_join::member_fingerprint(&member_url).await {
        Ok(fingerprint) => fingerprint,
        Err(error) => {
            let error = ApiError::from(Error::Join(error));
            return refused(&user, &member_url, error.status(), error.message());
        }
    };
    let Some(id) = crate::base::random::hex_token::<16>() else {
        return refused(&user, &member_url, StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    let request = JoinRequest {
        member_url: member_url.clone(),
        password: super::form_value(&form, "password").to_owned(),
        pre_shared_key: super::form_value(&form, "pre_shared_key").to_owned(),
        member_certificate_sha256: fingerprint.clone(),
    };
    *crate::base::sync::lock(&web.pending_join) = Some(PendingJoin {
        id: id.clone(),
        session: user.token.clone(),
        request,
        created_ms: crate::base::clock::now_ms(),
    });
    let body = format!(
        "<p>The member at <code>{}</code> presents a certificate with this SHA-256 fingerprint:</p>\
         <p><code id=\"member-fingerprint\" class=\"fingerprint\">{}</code></p>\
         <p class=\"problem\" role=\"alert\">Open the member's Status page (logged in there) and \
         check that its \"HTTPS certificate SHA-256 fingerprint\" is exactly this one. If it \
         differs, something between you and the member is impersonating it: do not go on.</p>\
         <form method=\"post\" action=\"/system/clustering/join/confirm\" class=\"inline\">{}\
         <input type=\"hidden\" name=\"id\" value=\"{}\">\
         <button type=\"submit\" id=\"confirm-join\">It matches: join the cluster</button></form> \
         <a href=\"/system/clustering\">It does not match: cancel</a>",
        esc(&member_url),
        esc(&fingerprint),
        csrf_input(&user),
        esc(&id)
    );
    page("Join a cluster: check the member", Some(&user), &body).into_response()
}

async fn confirm(
    State(app): State<Arc<App>>,
    Extension(web): Extension<Arc<WebState>>,
    OperatorForm { user, form }: OperatorForm,
) -> Response {
    let id = super::form_value(&form, "id");
    let pending = {
        let mut pending = crate::base::sync::lock(&web.pending_join);
        let fresh = pending.as_ref().is_some_and(|p| {
            p.id == id
                && p.session == user.token
                && crate::base::clock::now_ms().saturating_sub(p.created_ms) <= PENDING_JOIN_TTL_MS
        });
        if fresh { pending.take() } else { None }
    };
    let Some(pending) = pending else {
        return refused(
            &user,
            "",
            StatusCode::CONFLICT,
            "That check is no longer waiting for confirmation (it expired or was replaced). \
             Start again.",
        );
    };
    let request = pending.request;
    match cluster_join::run(&app, &user.name, &request)
        .await
        .map_err(|e| ApiError::from(Error::Join(e)))
    {
        Ok(joined) => {
            let mut body = super::saved_note("this peer joined the cluster; every link is active.");
            if joined.founded {
                body.push_str(
                    "<p>The member was standalone: the cluster was founded on it first.</p>",
                );
            }
            if !joined.other_members.is_empty() {
                let _ = write!(
                    body,
                    "<p>The other members now list this peer too: {}.</p>",
                    esc(&joined.other_members.join(", "))
                );
            }
            body.push_str(&super::system::peer_lines(&joined.status));
            body.push_str(
                "<p>Add this peer to the VCS's policy service as another server address. \
                 <a href=\"/system/clustering\">Clustering settings</a></p>",
            );
            page("Join a cluster", Some(&user), &body).into_response()
        }
        Err(error) => refused(
            &user,
            &request.member_url,
            error.status(),
            &format!("Not joined: {}", error.message()),
        ),
    }
}
