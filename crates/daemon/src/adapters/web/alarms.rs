//! Status > Alarms: the active alarms, most severe first, each with what to do and a button
//! to acknowledge it (which silences it: it leaves the header's count but stays listed until
//! its condition clears).

use super::{Operator, OperatorForm, csrf_input, esc, form_value, page, see_other};
use crate::adapters::api::ApiError;
use crate::services::{App, alarms};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::fmt::Write as _;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/status/alarms", get(alarms_page))
        .route("/status/alarms/acknowledge", post(acknowledge))
}

async fn alarms_page(Operator(user): Operator, State(app): State<Arc<App>>) -> Response {
    let view = alarms::view(&app);
    let mut body = String::new();
    if view.alarms.is_empty() {
        body.push_str("<p role=\"status\">No alarms.</p>");
        return page("Alarms", Some(&user), &body).into_response();
    }
    body.push_str(
        "<p>Alarms clear by themselves when their condition does. Acknowledging one silences \
         it: it leaves the count in the header but stays listed until it clears.</p>\
         <table><thead><tr><th>Severity</th><th>Alarm</th><th>About</th><th>Detail</th>\
         <th>What to do</th><th>Raised</th><th></th></tr></thead><tbody>",
    );
    for alarm in &view.alarms {
        let acknowledge = match &alarm.acknowledged_by {
            Some(by) => format!("Acknowledged by {}", esc(by)),
            None => format!(
                "<form method=\"post\" action=\"/status/alarms/acknowledge\">{}\
                 <input type=\"hidden\" name=\"id\" value=\"{}\">\
                 <input type=\"hidden\" name=\"subject\" value=\"{}\">\
                 <button type=\"submit\">Acknowledge</button></form>",
                csrf_input(&user),
                esc(&alarm.id),
                esc(&alarm.subject)
            ),
        };
        let _ = write!(
            body,
            "<tr class=\"alarm {}\"><td>{}</td><td>{} <small>({})</small></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{acknowledge}</td></tr>",
            esc(&alarm.severity),
            esc(&alarm.severity),
            esc(&alarm.title),
            esc(&alarm.id),
            esc(&alarm.subject),
            esc(&alarm.detail),
            esc(&alarm.action),
            esc(&alarm.raised)
        );
    }
    body.push_str("</tbody></table>");
    page("Alarms", Some(&user), &body).into_response()
}

async fn acknowledge(State(app): State<Arc<App>>, posted: OperatorForm) -> Response {
    let OperatorForm { user, form } = posted;
    let (id, subject) = (form_value(&form, "id"), form_value(&form, "subject"));
    match alarms::acknowledge(&app, id, subject, &user.name) {
        Ok(()) => see_other("/status/alarms"),
        Err(error) => super::error_page(Some(&user), &ApiError::from(error)),
    }
}
