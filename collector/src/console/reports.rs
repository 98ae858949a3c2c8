//! The weekly report for the headteacher and governors: generated on demand for any week, and
//! the reports the collector stored on its schedule. No pupil names, addresses or searches are
//! in it (see [`crate::reports`]), which is why governors may read it.

use super::layout::{page, when};
use super::{Audit, Console, ConsoleError, Staff};
use crate::reports::{self, Count, Week, Weekly};
use crate::store::{self, reports::Stored};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/reports/weekly", get(weekly_page))
        .route("/api/reports/weekly", get(weekly_api))
        .route("/reports", get(list_page))
        .route("/api/reports", get(list_api))
        .route("/reports/{id}", get(stored_page))
        .route("/api/reports/{id}", get(stored_api))
}

#[derive(Debug, Default, Deserialize)]
struct WeekParam {
    #[serde(default)]
    week: Option<String>,
}

fn week_of(p: &WeekParam) -> Result<Week, ConsoleError> {
    match p.week.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Week::last_complete(store::now_us())),
        Some(s) => Week::parse(s).ok_or_else(|| {
            ConsoleError::BadRequest(format!("week {s:?} is not an ISO week like 2026-W47"))
        }),
    }
}

async fn generate(c: &Arc<Console>, staff: &Staff, week: Week) -> Result<Weekly, ConsoleError> {
    let policy = c.policy.load_full();
    let entry = Audit::new("report.view", format!("report:weekly:{}", week.label()));
    c.audited(staff, entry, move |conn| {
        Ok(reports::weekly(conn, &policy, week)?)
    })
    .await
}

async fn weekly_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(p): Query<WeekParam>,
) -> Result<Json<Weekly>, ConsoleError> {
    generate(&c, &staff, week_of(&p)?).await.map(Json)
}

async fn weekly_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Query(p): Query<WeekParam>,
) -> Result<Markup, ConsoleError> {
    let week = week_of(&p)?;
    let r = generate(&c, &staff, week).await?;
    Ok(page(
        Some(&staff),
        &format!("Weekly report {}", r.week),
        html! {
            form.filters method="get" action="/reports/weekly" {
                label { "Week " input name="week" value=(r.week) placeholder="2026-W47"; }
                button type="submit" { "Show" }
                " "
                a href={"/reports/weekly?week=" (week.previous().label())} { "← previous week" }
                " · " a href="/reports" { "stored reports" }
            }
            (render(&r))
        },
    ))
}

async fn list(c: &Arc<Console>, staff: &Staff) -> Result<Vec<Stored>, ConsoleError> {
    c.audited(staff, Audit::new("report.list", "reports"), |conn| {
        Ok(store::reports::list(conn)?)
    })
    .await
}

async fn list_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Json<Vec<Stored>>, ConsoleError> {
    list(&c, &staff).await.map(Json)
}

async fn list_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
) -> Result<Markup, ConsoleError> {
    let all = list(&c, &staff).await?;
    Ok(page(
        Some(&staff),
        "Stored reports",
        html! {
            table #reports {
                thead { tr { th { "Report" } th { "Kind" } th { "Period from" } th { "Generated" } th { "By" } } }
                tbody { @for s in &all { tr {
                    td { a href={"/reports/" (s.id)} { "#" (s.id) } } td { (s.kind) }
                    td { (when(&s.period_start)) } td { (when(&s.generated_at)) } td { (s.generated_by) }
                } } }
            }
            @if all.is_empty() { p { "None stored yet: the weekly report is stored each week on its schedule." } }
        },
    ))
}

async fn stored(c: &Arc<Console>, staff: &Staff, id: i64) -> Result<Stored, ConsoleError> {
    c.audited(
        staff,
        Audit::new("report.view", format!("report:{id}")),
        move |conn| {
            store::reports::get(conn, id)?
                .ok_or_else(|| ConsoleError::NotFound(format!("report {id}")))
        },
    )
    .await
}

async fn stored_api(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Json<Stored>, ConsoleError> {
    stored(&c, &staff, id).await.map(Json)
}

async fn stored_page(
    State(c): State<Arc<Console>>,
    Extension(staff): Extension<Staff>,
    Path(id): Path<i64>,
) -> Result<Markup, ConsoleError> {
    let s = stored(&c, &staff, id).await?;
    let weekly: Option<Weekly> = s.body.clone().and_then(|b| serde_json::from_value(b).ok());
    Ok(page(
        Some(&staff),
        &format!("Stored report #{id}"),
        html! {
            p { "Generated " (when(&s.generated_at)) " by " (s.generated_by) ", as it was then." }
            @match &weekly {
                Some(r) => (render(r)),
                None => pre { (s.body.map(|b| b.to_string()).unwrap_or_default()) },
            }
        },
    ))
}

/// A horizontal bar chart as inline SVG. Labels come from data and are escaped like any text;
/// colours are attributes, not styles, so the strict CSP needs no exception.
pub fn bar_chart(id: &str, items: &[Count]) -> Markup {
    const ROW: usize = 22;
    const LABEL: usize = 180;
    const BAR: usize = 360;
    let max = items.iter().map(|c| c.count).max().unwrap_or(0).max(1);
    let height = ROW * items.len().max(1) + 4;
    html! {
        svg id=(id) xmlns="http://www.w3.org/2000/svg" role="img" width=(LABEL + BAR + 60)
            height=(height) viewBox={"0 0 " (LABEL + BAR + 60) " " (height)} {
            title { "Bar chart" }
            @for (i, c) in items.iter().enumerate() {
                @let y = i * ROW + 2;
                @let w = (c.count as usize * BAR).div_ceil(max as usize).max(1);
                text x=(LABEL - 6) y=(y + 15) text-anchor="end" font-size="12" fill="#1d2430" { (c.label) }
                rect x=(LABEL) y=(y + 3) width=(w) height=(ROW - 6) fill="#1f5fbf" {}
                text x=(LABEL + w + 6) y=(y + 15) font-size="12" fill="#1d2430" { (c.count) }
            }
        }
    }
}

pub fn render(r: &Weekly) -> Markup {
    html! {
        p #period { "From " (when(&r.period_start)) " to " (when(&r.period_end)) " (" (r.time_zone) "). "
            strong { (r.alerts) } " alerts." }
        dl.facts {
            dt { "Illegal-content alerts" } dd #illegal { (r.illegal_alerts) " (details only through the DSL)" }
            dt { "Incidents opened" } dd #incidents { (r.incidents_opened) }
            dt { "Agents gone silent" } dd #silent { (r.agents_silent) }
        }
        h2 { "Alerts by category" }
        (bar_chart("chart-category", &r.by_category))
        h2 { "Alerts by group" }
        (bar_chart("chart-group", &r.by_group))
        h2 { "Against the week before" }
        table #trend {
            thead { tr { th { "Category" } th { "This week" } th { "Week before" } th { "Change" } } }
            tbody { @for t in &r.trend { tr {
                td { (t.category) } td { (t.this_week) } td { (t.previous_week) }
                td { @if t.change > 0 { "+" } (t.change) }
            } } }
        }
        h2 { "Sites of concern" }
        @if r.sites_of_concern.is_empty() { p { "None." } } @else {
            table #sites {
                thead { tr { th { "Site" } th { "Alerts" } th { "Visits" } } }
                tbody { @for s in &r.sites_of_concern { tr { td { (s.host) } td { (s.alerts) } td { (s.visits) } } } }
            }
        }
        h2 { "Searches of concern" }
        @if r.searches_of_concern.is_empty() { p { "None." } } @else {
            table #searches {
                thead { tr { th { "Concern" } th { "Searches" } th { "Page titles" } } }
                tbody { @for s in &r.searches_of_concern { tr {
                    td { (s.concern) } td { (s.searches) } td { (s.page_titles) }
                } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_labels_from_data_are_escaped() {
        let items = vec![
            Count {
                label: "<script>alert(1)</script>".into(),
                count: 3,
            },
            Count {
                label: "ok".into(),
                count: 1,
            },
        ];
        let svg = bar_chart("c", &items).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("width=\"360\""), "{svg}");
    }
}
