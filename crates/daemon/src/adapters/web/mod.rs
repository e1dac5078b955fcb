//! The administrator's web interface: server-rendered HTML pages on the admin HTTPS listener,
//! beside the JSON API. Every change goes through the same services as the API
//! (`crate::services`), so the rules, the errors and the Configuration Log are identical; this module only turns
//! forms into request bodies and answers into pages.
//!
//! Sessions are the API's (`auth::Sessions`, same idle timeout) carried in a cookie that is
//! `Secure; HttpOnly; SameSite=Strict`. Every POST from a signed-in page must carry the
//! session's CSRF token; one without it (or with a wrong one) is refused with 403 before
//! anything is read or changed. No JavaScript is needed: plain links, forms and buttons; one
//! small script only adds upload progress bars to the Maintenance uploads.

mod alarms;
mod bridge_tls;
mod conference;
mod forms;
mod join;
mod logs;
mod maintenance;
mod policy;
mod status;
mod system;
mod users;

use crate::adapters::Source;
use crate::adapters::api::ApiError;
use crate::services::accounts::{self, READ_ONLY_REFUSAL, Via};
use crate::services::{App, Error, Input};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use model::Scope;
use model::record::AdminRole;
use std::fmt::Write as _;
use std::sync::Arc;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "baton_session";
/// Name of the hidden form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// Largest form body; the biggest legitimate one is a certificates page.
pub const FORM_BYTES_MAX: usize = 256 * 1024;
/// Requests served at once by the web pages (the API has its own limit).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 32;

const STYLE_CSS: &str = include_str!("style.css");

/// The web pages, to merge into the admin listener's router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/status") }))
        .route("/style.css", get(style))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/password", get(password_page).post(change_password))
        .route("/status", get(status::status_page))
        .merge(alarms::routes())
        .merge(policy::routes())
        .merge(bridge_tls::routes())
        .merge(system::routes())
        .merge(conference::routes())
        .merge(logs::routes())
        .merge(maintenance::routes())
        .merge(join::routes())
        .merge(users::routes())
        .layer(axum::middleware::from_fn_with_state(app.clone(), refuse_read_only))
        .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
        .layer(Extension(Arc::new(WebState::default())))
        .layer(tower::limit::ConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT_MAX))
        .with_state(app)
}

/// What the pages keep between requests besides the sessions: a restore waiting for its
/// confirmation, a cluster member whose certificate the operator has yet to confirm.
#[derive(Default)]
pub(crate) struct WebState {
    pending_restore: std::sync::Mutex<Option<maintenance::PendingRestore>>,
    pending_join: std::sync::Mutex<Option<join::PendingJoin>>,
}

/// A form body as name/value pairs, in order (repeated names kept).
pub(crate) type FormPairs = Vec<(String, String)>;

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE_CSS,
    )
}

// ---- escaping and layout --------------------------------------------------------------------

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Percent-encodes a URL path segment or query value.
pub(crate) fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// The navigation: the operator's map of the appliance.
const NAV: &[(&str, &[(&str, &str)])] = &[
    (
        "Status",
        &[
            ("Overview", "/status"),
            ("Alarms", "/status/alarms"),
            ("Live conferences", "/status/live-conferences"),
            ("Explain a call", "/status/explain"),
        ],
    ),
    (
        "System",
        &[
            ("Clustering", "/system/clustering"),
            ("IP", "/system/ipv4"),
            ("Ethernet", "/system/ethernet"),
            ("DNS", "/system/dns"),
            ("System name", "/system/system-name"),
            ("Time (NTP)", "/system/ntp"),
            ("Time zone", "/system/time-zone"),
            ("SNMP", "/system/snmp"),
            ("Syslog", "/system/syslog"),
            ("Administration access", "/system/administration-access"),
            ("Root password", "/system/root-password"),
            ("Certificates", "/system/certificates"),
            ("Licence", "/system/licence"),
            ("Maintenance mode", "/system/maintenance"),
        ],
    ),
    (
        "Conference configuration",
        &[
            ("Conference bridges", "/configuration/bridges"),
            ("Bridge pools", "/configuration/bridge-pools"),
            ("Service preferences", "/configuration/service-preferences"),
            ("Conference templates", "/configuration/conference-templates"),
            ("Conference aliases", "/configuration/conference-aliases"),
            ("Locations", "/configuration/locations"),
            ("Location addresses", "/configuration/location-addresses"),
            ("Policy service", "/system/policy-service"),
            ("Conferences", "/conferences"),
        ],
    ),
    ("Users", &[("Administrator accounts", "/users/administrators")]),
    (
        "Maintenance",
        &[
            ("Backup and restore", "/maintenance/backup"),
            ("Upgrade", "/maintenance/upgrade"),
            ("Restart options", "/maintenance/restart"),
        ],
    ),
    (
        "Logs",
        &[
            ("Event Log", "/logs/events"),
            ("Configuration Log", "/logs/configuration"),
            ("Configuration history", "/history"),
        ],
    ),
];

/// A whole page: header with the user and a logout button, navigation, then `body`.
pub(crate) fn page(title: &str, user: Option<&WebUser>, body: &str) -> Html<String> {
    let mut html = String::with_capacity(body.len() + 4096);
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} - Baton</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body>\
         <header><a class=\"product\" href=\"/status\">Baton</a>",
        esc(title)
    );
    if let Some(user) = user {
        // Product on the left; alarms, then who is signed in, on the right.
        let alarms = match user.alarm_count {
            1 => "1 alarm".to_owned(),
            count => format!("{count} alarms"),
        };
        let class = if user.alarm_count > 0 { "alarms active" } else { "alarms" };
        let _ = write!(html, " <a class=\"{class}\" href=\"/status/alarms\">{alarms}</a> ");
        let _ = write!(
            html,
            "<form class=\"logout\" method=\"post\" action=\"/logout\">{}\
             <span>Signed in as {}{}</span> <button type=\"submit\">Log out</button></form>",
            csrf_input(user),
            esc(&user.name),
            if user.read_only { " (read-only)" } else { "" }
        );
    }
    html.push_str("</header>");
    if user.is_some_and(|user| !user.must_change_password) {
        html.push_str("<nav aria-label=\"Main\"><ul>");
        for (section, links) in NAV {
            let _ = write!(html, "<li><span class=\"section\">{}</span><ul>", esc(section));
            for (label, href) in *links {
                let _ = write!(html, "<li><a href=\"{href}\">{}</a></li>", esc(label));
            }
            html.push_str("</ul></li>");
        }
        html.push_str("</ul></nav>");
    }
    let _ = write!(html, "<main><h1>{}</h1>{body}</main></body></html>", esc(title));
    Html(html)
}

/// The sentence saying where a setting applies.
pub(crate) fn scope_note(scope: Scope) -> &'static str {
    match scope {
        Scope::Local => {
            "<p class=\"scope local\">These settings apply to this peer only; they are not replicated.</p>"
        }
        Scope::Shared => {
            "<p class=\"scope shared\">These settings apply to the whole cluster: a change here reaches every peer.</p>"
        }
    }
}

pub(crate) fn saved_note(message: &str) -> String {
    format!("<p class=\"saved\" role=\"status\">Saved: {}</p>", esc(message))
}

pub(crate) fn error_note(message: &str) -> String {
    format!("<p class=\"problem\" role=\"alert\">{}</p>", esc(message))
}

pub(crate) fn csrf_input(user: &WebUser) -> String {
    format!("<input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">", esc(&user.csrf_token))
}

/// Answers an error as a page, keeping the API's status code.
pub(crate) fn error_page(user: Option<&WebUser>, error: &ApiError) -> Response {
    let body = error_note(error.message());
    (error.status(), page("Error", user, &body)).into_response()
}

/// Path prefixes whose clients are programs (the API, the VCS): they get the API's JSON 404.
const PROGRAM_PATH_PREFIXES: &[&str] = &["/api/", "/baton/"];

/// The admin listener's answer to an unknown address: the API's JSON 404 for programs, and
/// for a browser a 404 page inside the layout (with the navigation when signed in).
pub(crate) async fn not_found(State(app): State<Arc<App>>, request: Request) -> Response {
    let path = request.uri().path();
    if path == "/api" || PROGRAM_PATH_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
            .into_response();
    }
    let (mut parts, _) = request.into_parts();
    let user = WebUser::from_request_parts(&mut parts, &app).await.ok();
    let body = "<p class=\"problem\" role=\"alert\">There is no page at this address.</p>\
                <p><a href=\"/status\">Go to the Status page</a></p>";
    (StatusCode::NOT_FOUND, page("Page not found", user.as_ref(), body)).into_response()
}

// ---- sessions -------------------------------------------------------------------------------

/// A signed-in administrator, read from the session cookie.
pub(crate) struct WebUser {
    pub(crate) name: String,
    pub(crate) must_change_password: bool,
    /// A read-only account sees every page and changes nothing ([`refuse_read_only`]).
    pub(crate) read_only: bool,
    pub(crate) token: String,
    pub(crate) csrf_token: String,
    /// Active alarms nobody acknowledged, for the header.
    pub(crate) alarm_count: usize,
}

/// A signed-in administrator who has changed the factory password, as every page but the
/// password page needs.
pub(crate) struct Operator(pub(crate) WebUser);

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<Arc<App>> for WebUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<WebUser, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let token = session_cookie(&parts.headers).ok_or_else(to_login)?;
        let (name, csrf_token) = app
            .sessions
            .user_and_csrf(&token, crate::base::clock::now_ms())
            .ok_or_else(to_login)?;
        let admin = accounts::lookup_admin(app, &name).ok_or_else(to_login)?;
        let must_change_password = admin.must_change_password;
        let read_only = admin.role == AdminRole::ReadOnly;
        let alarm_count = app.alarms.unacknowledged();
        Ok(WebUser { name, must_change_password, read_only, token, csrf_token, alarm_count })
    }
}

impl FromRequestParts<Arc<App>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Operator, Response> {
        let user = WebUser::from_request_parts(parts, app).await?;
        if user.must_change_password {
            return Err(Redirect::to("/password").into_response());
        }
        Ok(Operator(user))
    }
}

/// A form posted by an [`Operator`], refused (403, nothing changed) unless it carries this
/// session's CSRF token: a handler taking it cannot forget the check. It reads the body, so it
/// is the handler's last argument.
pub(crate) struct OperatorForm {
    pub(crate) user: WebUser,
    pub(crate) form: FormPairs,
}

impl FromRequest<Arc<App>> for OperatorForm {
    type Rejection = Response;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<OperatorForm, Response> {
        let (mut parts, body) = request.into_parts();
        let Operator(user) = Operator::from_request_parts(&mut parts, app).await?;
        let Form(form) = Form::<FormPairs>::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(IntoResponse::into_response)?;
        match check_csrf(&user, &form) {
            Some(refused) => Err(refused),
            None => Ok(OperatorForm { user, form }),
        }
    }
}

/// Pages a read-only account may post to: its own session and password.
const OWN_ACCOUNT_PAGES: &[&str] = &["/login", "/logout", "/password"];

/// Refuses (403, nothing read or changed) every form a read-only account posts, except to its
/// own session and password. It runs before any page's handler, by method, so a new page
/// cannot forget it.
async fn refuse_read_only(
    State(app): State<Arc<App>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let reads = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if reads || OWN_ACCOUNT_PAGES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    if let Ok(user) = WebUser::from_request_parts(&mut parts, &app).await
        && user.read_only
    {
        let body = error_note(&format!("Refused: {READ_ONLY_REFUSAL}."));
        return (StatusCode::FORBIDDEN, page("Refused", Some(&user), &body)).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The refusal (403, nothing changed) of a POST whose CSRF token is missing or not this
/// session's, or `None` when the token is right.
pub(crate) fn check_csrf(user: &WebUser, form: &FormPairs) -> Option<Response> {
    let sent = form.iter().find(|(name, _)| name == CSRF_FIELD).map(|(_, value)| value.as_str());
    match sent {
        Some(sent) if same_secret(sent, &user.csrf_token) => None,
        _ => {
            let body = error_note(
                "This form was refused: it did not carry this session's security token. \
                 Reload the page and submit it again.",
            );
            Some((StatusCode::FORBIDDEN, page("Refused", Some(user), &body)).into_response())
        }
    }
}

/// The value of a form field, or "" when absent.
pub(crate) fn form_value<'a>(form: &'a FormPairs, name: &str) -> &'a str {
    form.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value.as_str())
}

/// A 303 to `location`: the browser then GETs it, so reloading does not re-submit.
pub(crate) fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

// ---- login, logout, password ---------------------------------------------------------------

fn login_form(error: Option<&str>, username: &str) -> String {
    let mut body = String::new();
    if let Some(error) = error {
        body.push_str(&error_note(error));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/login\" class=\"record\">\
         <div class=\"field\"><label for=\"username\">User name</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" required value=\"{}\"></div>\
         <div class=\"field\"><label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></div>\
         <button type=\"submit\">Log in</button></form>",
        esc(username)
    );
    body
}

async fn login_page() -> Html<String> {
    page("Log in", None, &login_form(None, ""))
}

async fn login(
    Source(source): Source,
    State(app): State<Arc<App>>,
    Form(form): Form<FormPairs>,
) -> Response {
    let username = form_value(&form, "username");
    let password = form_value(&form, "password");
    // The same check as the API's: argon2id behind the same semaphore, failures journaled.
    let session = match accounts::log_in(&app, source, username, password, Via::Web).await {
        Ok(session) => session,
        Err(Error::WrongPassword) => {
            let body = login_form(Some("Wrong user name or password."), username);
            return (StatusCode::UNAUTHORIZED, page("Log in", None, &body)).into_response();
        }
        Err(throttled @ Error::LoginThrottled { .. }) => {
            let body = login_form(Some(&format!("{throttled}.")), username);
            return (StatusCode::TOO_MANY_REQUESTS, page("Log in", None, &body)).into_response();
        }
        Err(error) => return error_page(None, &error.into()),
    };
    let (token, admin) = (session.token, session.admin);
    let location = if admin.must_change_password { "/password" } else { "/status" };
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict");
    let mut response = see_other(location);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(
    user: WebUser,
    State(app): State<Arc<App>>,
    Form(form): Form<FormPairs>,
) -> Response {
    if let Some(refused) = check_csrf(&user, &form) {
        return refused;
    }
    accounts::log_out(&app, &user.name, &user.token, Via::Web);
    let mut response = see_other("/login");
    let expired =
        format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn password_form(user: &WebUser, errors: &[(String, String)], note: Option<&str>) -> String {
    let mut body = String::new();
    if user.must_change_password {
        body.push_str(
            "<p>This is the factory default password. Change it before anything else; \
             the account is shared by every peer of a cluster.</p>",
        );
    }
    if let Some(note) = note {
        body.push_str(note);
    }
    let error_for = |field: &str| {
        errors
            .iter()
            .filter(|(name, _)| name == field)
            .map(|(_, message)| {
                format!("<p class=\"error\" id=\"error-{field}\">{}</p>", esc(message))
            })
            .collect::<String>()
    };
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/password\" class=\"record\">{}\
         <div class=\"field\"><label for=\"current_password\">Current password</label>\
         <input id=\"current_password\" name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required>{}</div>\
         <div class=\"field\"><label for=\"new_password\">New password</label>\
         <input id=\"new_password\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" required>{}\
         <p class=\"hint\">At least {} characters.</p></div>\
         <button type=\"submit\">Change password</button></form>",
        csrf_input(user),
        error_for("current_password"),
        error_for("new_password"),
        crate::base::auth::PASSWORD_LENGTH_MIN,
    );
    body
}

async fn password_page(user: WebUser) -> Html<String> {
    page("Change password", Some(&user), &password_form(&user, &[], None))
}

async fn change_password(
    mut user: WebUser,
    Source(source): Source,
    State(app): State<Arc<App>>,
    Form(form): Form<FormPairs>,
) -> Response {
    if let Some(refused) = check_csrf(&user, &form) {
        return refused;
    }
    let changed = accounts::change_own_password(
        &app,
        source,
        &user.name,
        Some(&user.token),
        form_value(&form, "current_password"),
        form_value(&form, "new_password").to_owned(),
    )
    .await;
    match changed {
        Ok(()) => {
            user.must_change_password = false;
            let body = format!(
                "{}<p><a href=\"/status\">Continue to the Status page</a></p>",
                saved_note("password changed")
            );
            page("Change password", Some(&user), &body).into_response()
        }
        Err(error @ Error::Invalid { input: Input::Fields, .. }) => {
            let errors: Vec<(String, String)> = error
                .fields()
                .iter()
                .map(|field| (field.field.clone(), field.message.clone()))
                .collect();
            let body = password_form(&user, &errors, None);
            (StatusCode::UNPROCESSABLE_ENTITY, page("Change password", Some(&user), &body))
                .into_response()
        }
        Err(error) => error_page(Some(&user), &error.into()),
    }
}
