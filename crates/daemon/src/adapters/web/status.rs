//! The Status page: what this peer is (version, peer id, uptime, log position), its cluster
//! lines, whether the policy service can serve, bridge health as this peer sees it, and the
//! conferences in progress.

use super::{Operator, esc, page};
use crate::adapters::api::ApiError;
use crate::services::App;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use model::{Record, RecordKind};
use std::fmt::Write as _;
use std::sync::Arc;

pub(super) async fn status_page(Operator(user): Operator, State(app): State<Arc<App>>) -> Response {
    let read = app
        .readers
        .read(|conn| {
            let log_position = eventlog::last_position(conn)?;
            let bridges = projections::list(conn, RecordKind::Bridge)?;
            let conferences = projections::list(conn, RecordKind::Conference)?;
            let maintenance = projections::list(conn, RecordKind::Maintenance)?;
            let system_name = projections::list(conn, RecordKind::SystemName)?;
            let certificates = projections::list(conn, RecordKind::Certificates)?;
            Ok((log_position, bridges, conferences, maintenance, system_name, certificates))
        })
        .await;
    let (log_position, bridges, conferences, maintenance, system_name, certificates) = match read {
        Ok(read) => read,
        Err(error) => return super::error_page(Some(&user), &ApiError::from(error)),
    };
    let mut body = system_table(&app, log_position, &system_name, &maintenance, &certificates);
    body.push_str(&serving_section(&app).await);
    body.push_str(&bridges_section(&app, &bridges));
    let _ = write!(
        body,
        "<h2>Conferences</h2><p>{} in progress. <a href=\"/conferences\">List</a> \
         <a href=\"/status/live-conferences\">Live, with participants</a> \
         <a href=\"/status/explain\">Explain a call</a></p>",
        conferences.len()
    );
    page("Status", Some(&user), &body).into_response()
}

/// The System table: identity, version, uptime, maintenance and the certificate's fingerprint.
fn system_table(
    app: &App,
    log_position: u64,
    system_name: &[Record],
    maintenance: &[Record],
    certificates: &[Record],
) -> String {
    let now_ms = crate::base::clock::now_ms();
    let uptime_s = now_ms.saturating_sub(app.started_ms) / 1000;
    let host_name = system_name.iter().find_map(|record| match record {
        Record::SystemName(name) => Some(if name.domain.is_empty() {
            name.host_name.clone()
        } else {
            format!("{}.{}", name.host_name, name.domain)
        }),
        _ => None,
    });
    let mut body = String::new();
    let in_maintenance =
        maintenance.iter().any(|record| matches!(record, Record::Maintenance(m) if m.enabled));
    body.push_str("<h2>System</h2><table><tbody>");
    let rows = [
        ("Product", "Baton".to_owned()),
        ("Version", crate::base::version::software_version().to_owned()),
        ("System name", host_name.unwrap_or_else(|| "(not set)".to_owned())),
        (
            "Hardware serial",
            match &app.hardware_serial {
                Ok(serial) => serial.clone(),
                Err(problem) => format!("unknown ({problem})"),
            },
        ),
        ("Peer id", app.writer.peer_id().to_hex()),
        ("Started", crate::base::clock::format_ms(app.started_ms)),
        (
            "Uptime",
            humantime::format_duration(std::time::Duration::from_secs(uptime_s)).to_string(),
        ),
        ("Configuration log position", log_position.to_string()),
        ("Maintenance mode", if in_maintenance { "On".to_owned() } else { "Off".to_owned() }),
    ];
    for (label, value) in rows {
        let _ = write!(body, "<tr><th scope=\"row\">{label}</th><td>{}</td></tr>", esc(&value));
    }
    let certificates = certificates.iter().find_map(|record| match record {
        Record::Certificates(certificates) => Some(certificates),
        _ => None,
    });
    let fingerprint = crate::base::tls::presented_fingerprint(&app.tls_files, certificates)
        .unwrap_or_else(|error| format!("unknown ({error:#})"));
    let _ = write!(
        body,
        "<tr><th scope=\"row\">HTTPS certificate SHA-256 fingerprint</th>\
         <td><code id=\"certificate-fingerprint\">{}</code><p class=\"hint\">A peer joining the \
         cluster through this one shows this fingerprint; check that they match.</p></td></tr>",
        esc(&fingerprint)
    );
    body.push_str("</tbody></table>");

    body
}

/// The Cluster and Policy service sections: whether this peer clusters and serves the VCS.
async fn serving_section(app: &App) -> String {
    let mut body = String::new();
    let cluster = app.cluster.status();
    let _ = write!(
        body,
        "<h2>Cluster</h2><p>Mode: {}. <a href=\"/system/clustering\">Clustering settings</a></p>",
        esc(cluster.mode.as_str())
    );
    body.push_str(&super::system::peer_lines(&cluster));

    body.push_str("<h2>Policy service</h2>");
    match app.policy.unavailable().await {
        None => body.push_str("<p><span class=\"ok\">Serving</span> policy requests.</p>"),
        Some(reason) => {
            let _ = write!(body, "<p><span class=\"bad\">Not serving: {}</span></p>", esc(&reason));
        }
    }

    body
}

/// Each bridge's health as the policy service on this peer sees it.
fn bridges_section(app: &App, bridges: &[Record]) -> String {
    let mut body = String::new();
    body.push_str("<h2>Conference bridges</h2>");
    let problems = app.policy.health.problems();
    if bridges.is_empty() {
        body.push_str("<p>No bridges. <a href=\"/configuration/bridges\">Add one</a>.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th scope=\"col\">Bridge</th><th scope=\"col\">Address</th>\
             <th scope=\"col\">Health (seen from this peer)</th></tr></thead><tbody>",
        );
        for record in bridges {
            let Record::Bridge(bridge) = record else { continue };
            let health = if !bridge.enabled {
                "<span class=\"pending\">Disabled</span>".to_owned()
            } else if !app.policy.health.is_up(bridge) {
                let problem = problems.get(&bridge.name).map_or("", String::as_str);
                format!("<span class=\"bad\">Down: {}</span>", esc(problem))
            } else {
                "<span class=\"ok\">In service</span>".to_owned()
            };
            // Its page shows the certificate it presented, to compare and trust.
            let _ = write!(
                body,
                "<tr><td><a href=\"/configuration/bridges/{}\">{}</a></td><td>{}</td><td>{health}</td></tr>",
                super::url_encode(&bridge.name),
                esc(&bridge.name),
                esc(&bridge.address)
            );
        }
        body.push_str("</tbody></table>");
    }

    body
}
