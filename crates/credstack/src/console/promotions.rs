//! Console: Offers → Promotions → Credit, as seed 000 walks through it — the
//! list, the "Create promotional credit" modal, the details page with its
//! side panel and lock state, the customers card, granting to all or to
//! specific customers, row actions Revoke / Grant again, and Manage access
//! (filter, search, multi-select, bulk revoke and bulk re-grant).

use super::credit_systems;
use super::session::Submitted;
use super::{FieldErrors, Layout, Operator, done, not_found, render, render_with, unavailable};
use crate::engine::{
    NewPromotion, Outcome, PROMOTION_CUSTOMERS_MAX, PromotionEdit, PromotionView, Request,
};
use crate::ids::{self, Kind};
use crate::ledger::BulkAction;
use crate::ledger::Ledger;
use crate::ledger::{BulkCall, Claimed};
use crate::records::{CreditSystem, PromotionCustomer};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{NaiveDateTime, Utc};
use credstack_core::promotion::Status;
use credstack_core::{Instant, Interval, Period};
use serde::Deserialize;

const BASE: &str = "/offers/promotions/credit";

fn when(at: Option<Instant>) -> String {
    at.map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// `datetime-local` values, read as UTC.
fn parse_local(field: &str, text: &str) -> Result<Instant, FieldErrors> {
    let text = text.trim();
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
        .ok_or_else(|| FieldErrors::field(field, "Enter a date and time."))
}

fn to_local(at: Option<Instant>) -> String {
    at.map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M").to_string())
}

/// A campaign as the pages show it.
pub struct Summary {
    pub id: String,
    pub name: String,
    pub description: String,
    pub credit_system: String,
    pub status: &'static str,
    pub applied: bool,
    pub quantity: String,
    pub unit: String,
    pub reset_interval: &'static str,
    pub access_period: String,
    pub allow_multiple_grants: bool,
    pub starts: String,
    pub ends: String,
    pub granted_count: u64,
    pub revoked_count: u64,
    pub created: String,
}

fn summary(view: &PromotionView, systems: &[CreditSystem]) -> Summary {
    let p = &view.promotion;
    let system = systems.iter().find(|cs| cs.id == p.credit_system_id);
    Summary {
        id: ids::format(Kind::PromotionalCredit, p.id),
        name: p.name.clone(),
        description: p.description.clone().unwrap_or_default(),
        credit_system: system.map_or_else(
            || ids::format(Kind::CreditSystem, p.credit_system_id),
            |cs| cs.name.clone(),
        ),
        unit: system.map_or_else(String::new, |cs| cs.unit.clone()),
        status: p.window().status(view.at).as_str(),
        applied: p.applied,
        quantity: p.policy.quantity.format(p.scale),
        reset_interval: p.policy.reset_interval.map_or("never", |i| i.as_str()),
        access_period: match p.policy.access_period {
            None => "Forever".to_string(),
            Some(period) => format!(
                "{} {}{}",
                period.count,
                period.interval.as_str(),
                if period.count == 1 { "" } else { "s" }
            ),
        },
        allow_multiple_grants: p.policy.allow_multiple_grants,
        starts: p.starts_at.map_or_else(
            || format!("Immediately ({})", when(Some(p.created_at))),
            |s| when(Some(s)),
        ),
        ends: p
            .ends_at
            .map_or_else(|| "Forever".to_string(), |e| when(Some(e))),
        granted_count: view.granted_count,
        revoked_count: view.revoked_count,
        created: when(Some(p.created_at)),
    }
}

/// A credit system offered in the policy form.
pub struct SystemOption {
    pub id: String,
    pub label: String,
}

fn options(systems: &[CreditSystem]) -> Vec<SystemOption> {
    systems
        .iter()
        .map(|cs| SystemOption {
            id: ids::format(Kind::CreditSystem, cs.id),
            label: format!("{} ({})", cs.name, cs.unit),
        })
        .collect()
}

/// The fields of the create and edit forms, as typed.
#[derive(Deserialize, Default, Clone)]
pub struct PolicyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    credit_system_id: String,
    /// `now` or `date`.
    #[serde(default)]
    start: String,
    #[serde(default)]
    starts_at: String,
    /// `forever` or `date`.
    #[serde(default)]
    end: String,
    #[serde(default)]
    ends_at: String,
    #[serde(default)]
    quantity: String,
    #[serde(default)]
    reset_interval: String,
    /// `off` or `on`.
    #[serde(default)]
    access: String,
    #[serde(default)]
    duration_value: String,
    #[serde(default)]
    duration_unit: String,
    allow_multiple_grants: Option<String>,
}

impl PolicyForm {
    fn blank() -> PolicyForm {
        PolicyForm {
            start: "now".into(),
            end: "forever".into(),
            reset_interval: "never".into(),
            access: "off".into(),
            duration_value: "1".into(),
            duration_unit: "month".into(),
            ..PolicyForm::default()
        }
    }

    fn from_view(view: &PromotionView) -> PolicyForm {
        let p = &view.promotion;
        PolicyForm {
            name: p.name.clone(),
            description: p.description.clone().unwrap_or_default(),
            credit_system_id: ids::format(Kind::CreditSystem, p.credit_system_id),
            start: if p.starts_at.is_some() { "date" } else { "now" }.into(),
            starts_at: to_local(p.starts_at),
            end: if p.ends_at.is_some() {
                "date"
            } else {
                "forever"
            }
            .into(),
            ends_at: to_local(p.ends_at),
            quantity: p.policy.quantity.format(p.scale),
            reset_interval: p
                .policy
                .reset_interval
                .map_or("never", |i| i.as_str())
                .into(),
            access: if p.policy.access_period.is_some() {
                "on"
            } else {
                "off"
            }
            .into(),
            duration_value: p.policy.access_period.map_or(1, |a| a.count).to_string(),
            duration_unit: p
                .policy
                .access_period
                .map_or("month", |a| a.interval.as_str())
                .into(),
            allow_multiple_grants: p.policy.allow_multiple_grants.then(|| "on".to_string()),
        }
    }

    fn multiple(&self) -> bool {
        self.allow_multiple_grants.is_some()
    }

    fn starts_at(&self) -> Result<Option<Instant>, FieldErrors> {
        match self.start.as_str() {
            "date" => parse_local("starts_at", &self.starts_at).map(Some),
            _ => Ok(None),
        }
    }

    fn ends_at(&self) -> Result<Option<Instant>, FieldErrors> {
        match self.end.as_str() {
            "date" => parse_local("ends_at", &self.ends_at).map(Some),
            _ => Ok(None),
        }
    }

    fn reset(&self) -> Result<Option<Interval>, FieldErrors> {
        match self.reset_interval.as_str() {
            "" | "never" => Ok(None),
            other => Interval::parse(other).map(Some).ok_or_else(|| {
                FieldErrors::field("reset_interval", "Choose how often the quantity renews.")
            }),
        }
    }

    fn access_period(&self) -> Result<Option<Period>, FieldErrors> {
        if self.access != "on" {
            return Ok(None);
        }
        let unit = Interval::parse(&self.duration_unit).ok_or_else(|| {
            FieldErrors::field("access_period", "Choose days, weeks, months or years.")
        })?;
        let value = self.duration_value.trim().parse::<u32>().ok();
        value
            .and_then(|v| Period::new(unit, v))
            .map(Some)
            .ok_or_else(|| {
                FieldErrors::field(
                    "access_period",
                    format!("Enter a whole number from 1 to {}.", Period::COUNT_MAX),
                )
            })
    }
}

// ---- the list -------------------------------------------------------------------

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    notice: Option<String>,
}

#[derive(Template)]
#[template(path = "console/promotions.html")]
struct ListPage {
    layout: Layout,
    filter: String,
    rows: Vec<Summary>,
    systems: Vec<SystemOption>,
    form: PolicyForm,
    errors: FieldErrors,
}

async fn list_page(
    ledger: &Ledger,
    operator: &Operator,
    filter: String,
    notice: Option<String>,
    form: PolicyForm,
    errors: FieldErrors,
) -> Result<ListPage, Response> {
    let systems = credit_systems::all(ledger).await.map_err(unavailable)?;
    let status = Status::parse(&filter);
    let now = ledger.now();
    let views = ledger
        .read(move |c| crate::history::promotion_views(c, status, now, 100, None))
        .await
        .map_err(unavailable)?
        .items;
    Ok(ListPage {
        layout: Layout::new("promotions", operator, notice),
        filter,
        rows: views.iter().map(|v| summary(v, &systems)).collect(),
        systems: options(
            &systems
                .into_iter()
                .filter(|cs| cs.active)
                .collect::<Vec<_>>(),
        ),
        form,
        errors,
    })
}

pub async fn list(
    State(ledger): State<Ledger>,
    operator: Operator,
    Query(q): Query<ListQuery>,
) -> Response {
    let filter = q
        .status
        .filter(|s| Status::parse(s).is_some())
        .unwrap_or_default();
    match list_page(
        &ledger,
        &operator,
        filter,
        q.notice,
        PolicyForm::blank(),
        FieldErrors::default(),
    )
    .await
    {
        Ok(page) => render(&page),
        Err(response) => response,
    }
}

fn new_promotion(form: &PolicyForm) -> Result<NewPromotion, FieldErrors> {
    let credit_system_id = ids::parse(Kind::CreditSystem, &form.credit_system_id)
        .ok_or_else(|| FieldErrors::field("credit_system_id", "Choose an active credit system."))?;
    Ok(NewPromotion {
        name: form.name.clone(),
        description: Some(form.description.trim().to_string()).filter(|d| !d.is_empty()),
        credit_system_id,
        starts_at: form.starts_at()?,
        ends_at: form.ends_at()?,
        quantity: form.quantity.trim().to_string(),
        reset_interval: form.reset()?,
        access_period: form.access_period()?,
        allow_multiple_grants: form.multiple(),
    })
}

pub async fn create(State(ledger): State<Ledger>, submitted: Submitted<PolicyForm>) -> Response {
    let form = submitted.form;
    let result = match new_promotion(&form) {
        Ok(new) => ledger
            .execute(Request::CreatePromotion(new))
            .await
            .map_err(FieldErrors::from_error),
        Err(errors) => Err(errors),
    };
    match result {
        Ok(Outcome::Promotion(view)) => done(
            &format!(
                "{BASE}/{}",
                ids::format(Kind::PromotionalCredit, view.promotion.id)
            ),
            "Promotional credit created. Grant it to customers when you are ready.",
        ),
        Ok(_) => unreachable!("creating a promotion answers a promotion"),
        Err(errors) => {
            match list_page(
                &ledger,
                &submitted.operator,
                String::new(),
                None,
                form,
                errors,
            )
            .await
            {
                Ok(page) => render_with(StatusCode::UNPROCESSABLE_ENTITY, &page),
                Err(response) => response,
            }
        }
    }
}

// ---- the details page ------------------------------------------------------------

/// One customer row of the details page.
pub struct CustomerRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub external_id: String,
    pub status: &'static str,
    pub active_assignments: u64,
    pub last_granted: String,
    pub revoked: String,
}

impl From<&PromotionCustomer> for CustomerRow {
    fn from(row: &PromotionCustomer) -> CustomerRow {
        CustomerRow {
            id: ids::format(Kind::Customer, row.customer.id),
            name: row.customer.name.clone(),
            email: row.customer.email.clone().unwrap_or_default(),
            external_id: row.customer.external_id.clone().unwrap_or_default(),
            status: row.status(),
            active_assignments: row.active_assignments,
            last_granted: when(Some(row.last_granted_at)),
            revoked: when(row.revoked_at),
        }
    }
}

/// A background grant or revoke as the page shows it.
pub struct JobView {
    pub id: String,
    pub action: &'static str,
    pub total: u64,
    pub done: u64,
    pub skipped: u64,
    pub reasons: Vec<(String, u64)>,
    pub percent: u64,
    pub finished: bool,
    pub error: Option<String>,
}

impl JobView {
    /// The job from the campaign's call to all customers in the store, so
    /// any node shows it, whichever node runs it. A call whose lease has
    /// passed unfinished stopped with its process.
    fn from_run(run: &crate::records::BulkRun, wall_now: Instant) -> JobView {
        let counts: crate::records::BulkCounts =
            serde_json::from_str(&run.progress).unwrap_or_default();
        let stalled = run.finished_at.is_none() && run.lease_until < wall_now;
        let finished = run.finished_at.is_some() || stalled;
        let total = run.total.unwrap_or(0);
        let percent = if finished || total == 0 {
            100
        } else {
            ((counts.done + counts.skipped) * 100 / total).min(99)
        };
        let error = run.error.clone().or_else(|| {
            stalled.then(|| {
                "The job stopped before it finished (its server went away). \
                 Start it again to finish it."
                    .to_string()
            })
        });
        JobView {
            id: ids::format(Kind::Job, run.run_id),
            action: if run.action == "grant" {
                "grant"
            } else {
                "revoke"
            },
            total,
            done: counts.done,
            skipped: counts.skipped,
            reasons: counts.skipped_by_reason.into_iter().collect(),
            percent,
            finished,
            error,
        }
    }
}

/// The job `job` (a `job_…` id) of campaign `id`, if it is the campaign's
/// latest call to all customers.
async fn job_view(ledger: &Ledger, id: u128, job: &str) -> Option<JobView> {
    let run_id = ids::parse(Kind::Job, job)?;
    let run = ledger.read(move |c| c.bulk_run(id)).await.ok()??;
    (run.run_id == run_id).then(|| JobView::from_run(&run, Utc::now()))
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    /// `granted`, `revoked`, or empty for everyone.
    filter: Option<String>,
    q: Option<String>,
    after: Option<String>,
    notice: Option<String>,
    job: Option<String>,
    /// Which dialog to open: `grant` or `edit`.
    open: Option<String>,
}

#[derive(Template)]
#[template(path = "console/promotion.html")]
struct DetailsPage {
    layout: Layout,
    promotion_id: String,
    promotion: Summary,
    has_customers: bool,
    filter: String,
    q: String,
    rows: Vec<CustomerRow>,
    next_after: Option<String>,
    job: Option<JobView>,
    edit: PolicyForm,
    systems: Vec<SystemOption>,
    edit_errors: FieldErrors,
    grant_errors: FieldErrors,
    open: String,
}

#[allow(clippy::too_many_arguments)]
async fn details_page(
    ledger: &Ledger,
    operator: &Operator,
    id: u128,
    query: ShowQuery,
    edit: Option<PolicyForm>,
    edit_errors: FieldErrors,
    grant_errors: FieldErrors,
) -> Result<DetailsPage, Response> {
    let now = ledger.now();
    let filter = query
        .filter
        .clone()
        .filter(|f| f == "granted" || f == "revoked")
        .unwrap_or_default();
    let q = query.q.clone().unwrap_or_default();
    let after = query
        .after
        .as_deref()
        .and_then(|a| ids::parse(Kind::Customer, a));
    let (status, search) = (filter.clone(), q.clone());
    let loaded = ledger
        .read(move |c| {
            let Some(view) = crate::history::promotion_view(c, id, now)? else {
                return Ok(None);
            };
            let has_customers = c.promotion_has_customers(id)?;
            let status = Some(status.as_str()).filter(|s| !s.is_empty());
            let search = Some(search.as_str()).filter(|s| !s.is_empty());
            let page = c.promotion_customers(id, status, search, now, 25, after)?;
            Ok(Some((view, has_customers, page)))
        })
        .await
        .map_err(unavailable)?;
    let Some((view, has_customers, page)) = loaded else {
        return Err(not_found(operator));
    };
    let systems = credit_systems::all(ledger).await.map_err(unavailable)?;
    let job = match query.job.as_deref() {
        Some(job) => job_view(ledger, id, job).await,
        None => None,
    };
    let next_after = page
        .has_more
        .then(|| {
            page.items
                .last()
                .map(|r| ids::format(Kind::Customer, r.customer.id))
        })
        .flatten();
    Ok(DetailsPage {
        layout: Layout::new("promotions", operator, query.notice.clone()),
        promotion_id: ids::format(Kind::PromotionalCredit, id),
        edit: edit.unwrap_or_else(|| PolicyForm::from_view(&view)),
        promotion: summary(&view, &systems),
        has_customers,
        filter,
        q,
        rows: page.items.iter().map(CustomerRow::from).collect(),
        next_after,
        job,
        systems: options(
            &systems
                .into_iter()
                .filter(|cs| cs.active || cs.id == view.promotion.credit_system_id)
                .collect::<Vec<_>>(),
        ),
        open: if !edit_errors.is_empty() {
            "edit".into()
        } else if !grant_errors.is_empty() {
            "grant".into()
        } else {
            query.open.unwrap_or_default()
        },
        edit_errors,
        grant_errors,
    })
}

fn promotion_id(text: &str) -> Option<u128> {
    ids::parse(Kind::PromotionalCredit, text)
}

pub async fn show(
    State(ledger): State<Ledger>,
    operator: Operator,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Response {
    let Some(id) = promotion_id(&id) else {
        return not_found(&operator);
    };
    match details_page(
        &ledger,
        &operator,
        id,
        query,
        None,
        FieldErrors::default(),
        FieldErrors::default(),
    )
    .await
    {
        Ok(page) => render(&page),
        Err(response) => response,
    }
}

/// Edits a campaign. On an applied campaign the locked fields are shown
/// disabled and not sent, so only name, description and end change.
pub async fn edit(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<PolicyForm>,
) -> Response {
    let Some(id) = promotion_id(&id) else {
        return not_found(&submitted.operator);
    };
    let form = submitted.form;
    let applied = ledger
        .read(move |c| c.promotion(id))
        .await
        .ok()
        .flatten()
        .is_some_and(|p| p.applied);
    let edit = (|| -> Result<PromotionEdit, FieldErrors> {
        let mut edit = PromotionEdit {
            name: Some(form.name.clone()),
            description: Some(Some(form.description.trim().to_string()).filter(|d| !d.is_empty())),
            ends_at: Some(form.ends_at()?),
            ..PromotionEdit::default()
        };
        if !applied {
            let new = new_promotion(&form)?;
            edit.credit_system_id = Some(new.credit_system_id);
            edit.quantity = Some(new.quantity);
            edit.reset_interval = Some(new.reset_interval);
            edit.access_period = Some(new.access_period);
            edit.allow_multiple_grants = Some(new.allow_multiple_grants);
            edit.starts_at = Some(new.starts_at);
        }
        Ok(edit)
    })();
    let result = match edit {
        Ok(edit) => ledger
            .execute(Request::UpdatePromotion { id, edit })
            .await
            .map_err(FieldErrors::from_error),
        Err(errors) => Err(errors),
    };
    let path = format!("{BASE}/{}", ids::format(Kind::PromotionalCredit, id));
    match result {
        Ok(_) => done(&path, "Changes saved."),
        Err(errors) => {
            let page = details_page(
                &ledger,
                &submitted.operator,
                id,
                ShowQuery::default(),
                Some(form),
                errors,
                FieldErrors::default(),
            )
            .await;
            match page {
                Ok(page) => render_with(StatusCode::UNPROCESSABLE_ENTITY, &page),
                Err(response) => response,
            }
        }
    }
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn delete(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<Empty>,
) -> Response {
    let Some(id) = promotion_id(&id) else {
        return not_found(&submitted.operator);
    };
    match ledger.execute(Request::DeletePromotion { id }).await {
        Ok(_) => done(BASE, "Promotional credit deleted."),
        Err(error) => {
            let errors = FieldErrors::from_error(error);
            let notice = errors
                .form
                .or_else(|| errors.fields.first().map(|(_, m)| m.clone()));
            let path = format!("{BASE}/{}", ids::format(Kind::PromotionalCredit, id));
            done(&path, &notice.unwrap_or_default())
        }
    }
}

/// A grant or revoke from the page: everyone, the selected rows, or one row.
#[derive(Deserialize, Default)]
pub struct TargetForm {
    /// `all` or `specific`.
    #[serde(default)]
    target: String,
    #[serde(default)]
    customer_ids: Vec<String>,
    /// A row's own action button, which wins over the selection.
    row_customer_id: Option<String>,
    /// Where to return: the filter and search of the page.
    #[serde(default)]
    filter: String,
    #[serde(default)]
    q: String,
}

impl TargetForm {
    fn customers(&self) -> Result<Vec<u128>, FieldErrors> {
        let chosen: Vec<&String> = match &self.row_customer_id {
            Some(row) => vec![row],
            None => self.customer_ids.iter().collect(),
        };
        if chosen.is_empty() {
            return Err(FieldErrors::field(
                "customer_ids",
                "Choose at least one customer.",
            ));
        }
        if chosen.len() > PROMOTION_CUSTOMERS_MAX {
            return Err(FieldErrors::field(
                "customer_ids",
                format!(
                    "Choose at most {PROMOTION_CUSTOMERS_MAX} customers, or grant to all customers."
                ),
            ));
        }
        chosen
            .into_iter()
            .map(|id| {
                ids::parse(Kind::Customer, id)
                    .ok_or_else(|| FieldErrors::field("customer_ids", "Unknown customer."))
            })
            .collect()
    }

    fn back(&self, id: u128) -> String {
        let query =
            serde_urlencoded::to_string([("filter", self.filter.as_str()), ("q", self.q.as_str())])
                .unwrap_or_default();
        format!(
            "{BASE}/{}?{query}",
            ids::format(Kind::PromotionalCredit, id)
        )
    }
}

fn outcome_notice(
    verb: &str,
    done: usize,
    skipped: &[(u128, credstack_core::promotion::Skip)],
) -> String {
    let mut notice = format!(
        "{verb} {done} customer{}.",
        if done == 1 { "" } else { "s" }
    );
    if !skipped.is_empty() {
        let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
        for (_, reason) in skipped {
            *reasons.entry(reason.as_str()).or_default() += 1;
        }
        let list: Vec<String> = reasons
            .iter()
            .map(|(r, n)| format!("{n} {}", r.replace('_', " ")))
            .collect();
        notice.push_str(&format!(" Skipped {}: {}.", skipped.len(), list.join(", ")));
    }
    notice
}

/// Starts a background job over all customers and returns to the page,
/// which follows its progress.
async fn start_job(ledger: &Ledger, id: u128, action: &'static str, back: String) -> Response {
    let promotion = match ledger.read(move |c| c.promotion(id)).await {
        Ok(Some(p)) => p,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such promotional credit").into_response(),
        Err(error) => return unavailable(error),
    };
    let cs = promotion.credit_system_id;
    let total = match action {
        "grant" => ledger.read(move |c| c.count_wallets(Some(cs))).await,
        _ => {
            ledger
                .read(move |c| c.promotion_counts(id, Utc::now()).map(|(g, _)| g))
                .await
        }
    }
    .unwrap_or(0);
    let action = match action {
        "grant" => BulkAction::Grant,
        _ => BulkAction::Revoke,
    };
    let call = BulkCall {
        total: Some(total),
        ..BulkCall::new(action, id, None)
    };
    // Claim now, so a refusal (another call running) shows at once and the
    // job is in the store before the page asks for it.
    let (cursor, counts) = match ledger.claim_to_all(&call).await {
        Ok(Claimed::Started { cursor, counts }) => (cursor, counts),
        Ok(Claimed::Replayed(_)) => unreachable!("a call without a key never replays"),
        Err(error) => {
            let message = crate::wire::ApiError::from(error).message;
            return done(&back, &message);
        }
    };
    let worker = ledger.clone();
    let job_id = call.run_id;
    tokio::spawn(async move {
        // The outcome, error included, is kept in the store with the run.
        worker
            .run_to_all(&call, cursor, counts, &|_| {}, &|_| serde_json::Value::Null)
            .await;
    });
    let separator = if back.contains('?') { '&' } else { '?' };
    Redirect::to(&format!(
        "{back}{separator}job={}",
        ids::format(Kind::Job, job_id)
    ))
    .into_response()
}

pub async fn grant(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<TargetForm>,
) -> Response {
    let Some(id) = promotion_id(&id) else {
        return not_found(&submitted.operator);
    };
    let form = submitted.form;
    if form.target == "all" && form.row_customer_id.is_none() {
        return start_job(&ledger, id, "grant", form.back(id)).await;
    }
    let result = match form.customers() {
        Ok(customer_ids) => ledger
            .execute(Request::GrantPromotion {
                id,
                customer_ids,
                run: None,
            })
            .await
            .map_err(FieldErrors::from_error),
        Err(errors) => Err(errors),
    };
    match result {
        Ok(Outcome::PromotionGrant(grant)) => done(
            &form.back(id),
            &outcome_notice("Granted", grant.granted.len(), &grant.skipped),
        ),
        Ok(_) => unreachable!("a grant answers a grant"),
        Err(errors) => {
            let query = ShowQuery {
                filter: Some(form.filter.clone()),
                q: Some(form.q.clone()),
                ..ShowQuery::default()
            };
            let page = details_page(
                &ledger,
                &submitted.operator,
                id,
                query,
                None,
                FieldErrors::default(),
                errors,
            )
            .await;
            match page {
                Ok(page) => render_with(StatusCode::UNPROCESSABLE_ENTITY, &page),
                Err(response) => response,
            }
        }
    }
}

pub async fn revoke(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<TargetForm>,
) -> Response {
    let Some(id) = promotion_id(&id) else {
        return not_found(&submitted.operator);
    };
    let form = submitted.form;
    if form.target == "all" && form.row_customer_id.is_none() {
        return start_job(&ledger, id, "revoke", form.back(id)).await;
    }
    let result = match form.customers() {
        Ok(customer_ids) => ledger
            .execute(Request::RevokePromotion {
                id,
                customer_ids,
                run: None,
            })
            .await
            .map_err(FieldErrors::from_error),
        Err(errors) => Err(errors),
    };
    match result {
        Ok(Outcome::PromotionRevoke(revoke)) => {
            let customers: std::collections::BTreeSet<u128> =
                revoke.revoked.iter().map(|a| a.customer_id).collect();
            done(
                &form.back(id),
                &outcome_notice("Revoked", customers.len(), &revoke.skipped),
            )
        }
        Ok(_) => unreachable!("a revoke answers a revoke"),
        Err(errors) => {
            let message = errors
                .form
                .or_else(|| errors.fields.first().map(|(_, m)| m.clone()))
                .unwrap_or_default();
            done(&form.back(id), &message)
        }
    }
}

// ---- fragments --------------------------------------------------------------------

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// A customer in the grant dialog's search.
pub struct Candidate {
    pub id: String,
    pub name: String,
    pub detail: String,
    pub has_wallet: bool,
}

#[derive(Template)]
#[template(path = "console/promotion_candidates.html")]
struct CandidatesFragment {
    candidates: Vec<Candidate>,
}

/// Customers matching a search, each marked with whether they can be granted.
pub async fn customer_search(
    State(ledger): State<Ledger>,
    operator: Operator,
    Path(id): Path<String>,
    Query(query): Query<SearchQuery>,
) -> Response {
    let Some(id) = promotion_id(&id) else {
        return not_found(&operator);
    };
    let q = query.q.trim().to_string();
    let found = ledger
        .read(move |c| {
            let Some(promotion) = c.promotion(id)? else {
                return Ok(Vec::new());
            };
            let search = Some(q.as_str()).filter(|q| !q.is_empty());
            let page = c.list_customers(search, 20, None)?;
            let mut candidates = Vec::new();
            for customer in page.items {
                let has_wallet = c
                    .wallet_by_owner(customer.id, promotion.credit_system_id)?
                    .is_some();
                let detail = [customer.email.clone(), customer.external_id.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" · ");
                candidates.push(Candidate {
                    id: ids::format(Kind::Customer, customer.id),
                    name: customer.name,
                    detail,
                    has_wallet,
                });
            }
            Ok(candidates)
        })
        .await;
    match found {
        Ok(candidates) => render(&CandidatesFragment { candidates }),
        Err(error) => unavailable(error),
    }
}

#[derive(Template)]
#[template(path = "console/promotion_job.html")]
struct JobFragment {
    job: JobView,
    promotion_id: String,
}

/// The progress card of a background job; htmx polls it until it is done.
pub async fn job_progress(
    State(ledger): State<Ledger>,
    operator: Operator,
    Path((id, job)): Path<(String, String)>,
) -> Response {
    let Some(promotion_id) = promotion_id(&id) else {
        return not_found(&operator);
    };
    match job_view(&ledger, promotion_id, &job).await {
        Some(job) => render(&JobFragment {
            job,
            promotion_id: id,
        }),
        None => not_found(&operator),
    }
}
