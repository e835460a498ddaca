//! Console: customers — the list with search and paging, creating one, and
//! the customer page: each wallet with its balance by purpose, its grants in
//! drawdown order, a chart of its balance over time, the ledger with paging,
//! and the operator's actions (create a wallet, add a grant, void one, make
//! a test debit). Every write goes through the ledger service, the same
//! request the API sends.

use super::chart;
use super::credit_systems;
use super::session::{Empty, Submitted};
use super::{FieldErrors, Layout, Operator, done, not_found, render, render_with, unavailable};
use crate::engine::{NewDebit, NewGrant, Outcome, Request, WalletView};
use crate::history;
use crate::ids::{self, Kind};
use crate::ledger::Ledger;
use crate::records::{CreditSystem, Customer, DebitRecord, EntryRecord, GrantRecord, Source};
use crate::store::{CHART_ENTRIES_MAX, PurposeLedger};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDateTime;
use credstack_core::{Amount, Grant, GrantStatus, Instant, Interval, Period, Purpose, Scale};
use serde::Deserialize;
use std::collections::HashMap;

/// Customers per page of the list.
const CUSTOMERS_PER_PAGE: usize = 25;
/// Ledger entries per page of a wallet's ledger.
const ENTRIES_PER_PAGE: usize = 20;
/// Entries behind the chart.
const CHART_ENTRIES: usize = CHART_ENTRIES_MAX;
/// Ended grants listed under a wallet.
const PAST_GRANTS: usize = 30;

// ---- formatting -------------------------------------------------------------------

/// Groups the whole part of a decimal in thousands: `1234567.5` → `1,234,567.5`.
pub fn group(text: &str) -> String {
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let mut grouped = String::with_capacity(text.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
    }
}

fn amount(value: Amount, scale: Scale) -> String {
    group(&value.format(scale))
}

/// A signed change: `+100`, `-20`.
fn signed(value: Amount, scale: Scale) -> String {
    if value.is_negative() {
        amount(value, scale)
    } else {
        format!("+{}", amount(value, scale))
    }
}

fn when(at: Instant) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn when_opt(at: Option<Instant>) -> String {
    at.map_or_else(String::new, when)
}

/// A date and a time on two lines, for narrow table columns.
fn when_split(at: Option<Instant>) -> Option<(String, String)> {
    at.map(|t| {
        (
            t.format("%Y-%m-%d").to_string(),
            t.format("%H:%M UTC").to_string(),
        )
    })
}

/// `datetime-local` values, read as UTC.
fn parse_local(field: &str, text: &str) -> Result<Instant, FieldErrors> {
    let text = text.trim();
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
        .ok_or_else(|| FieldErrors::field(field, "Enter a date and time (UTC)."))
}

/// An id as the tables show it: the prefix and the last six characters;
/// the full id goes in a `title`.
fn short(full: &str) -> String {
    match full.split_once('_') {
        Some((prefix, rest)) if rest.len() > 6 => format!("{prefix}_…{}", &rest[rest.len() - 6..]),
        _ => full.to_string(),
    }
}

/// A ledger error as a form shows it: the API's message, as a sentence.
fn form_errors(error: crate::error::Error) -> FieldErrors {
    let mut errors = FieldErrors::from_error(error);
    for (_, message) in &mut errors.fields {
        *message = sentence(message);
    }
    errors.form = errors.form.as_deref().map(sentence);
    errors
}

fn sentence(message: &str) -> String {
    let mut message = message
        .replace(" in a string,", ",")
        .replace("after effective_at and now", "in the future");
    for (param, words) in [
        ("overdraft_limit", "overdraft limit"),
        ("external_id", "external ID"),
        ("rollover_max", "rollover max"),
        ("expires_at", "expiry"),
        ("effective_at", "start"),
        ("interval_count", "interval count"),
        ("credit_system_id", "credit system"),
    ] {
        message = message.replace(param, words);
    }
    let mut chars = message.chars();
    let mut text: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return message,
    };
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn customer_href(customer_id: u128) -> String {
    format!("/customers/{}", ids::format(Kind::Customer, customer_id))
}

fn wallet_href(customer_id: u128, wallet_id: u128) -> String {
    format!(
        "{}?wallet={}",
        customer_href(customer_id),
        ids::format(Kind::Wallet, wallet_id)
    )
}

// ---- the list ---------------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    starting_after: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct CustomerForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    external_id: String,
}

/// A customer as the list shows it.
pub struct CustomerRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub external_id: String,
    pub created: String,
}

impl From<&Customer> for CustomerRow {
    fn from(c: &Customer) -> CustomerRow {
        CustomerRow {
            id: ids::format(Kind::Customer, c.id),
            name: c.name.clone(),
            email: c.email.clone().unwrap_or_default(),
            external_id: c.external_id.clone().unwrap_or_default(),
            created: when(c.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "console/customers.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<CustomerRow>,
    q: String,
    /// The next (older) page, if any.
    next: Option<String>,
    /// Whether this is not the first page.
    paged: bool,
    first: String,
    form: CustomerForm,
    errors: FieldErrors,
}

async fn list_page(
    ledger: &Ledger,
    operator: &Operator,
    query: ListQuery,
    form: CustomerForm,
    errors: FieldErrors,
) -> Result<ListPage, Response> {
    let q = query.q.unwrap_or_default().trim().to_string();
    let after = query
        .starting_after
        .as_deref()
        .and_then(|id| ids::parse(Kind::Customer, id));
    let search = optional(&q);
    let page = ledger
        .read(move |c| c.list_customers(search.as_deref(), CUSTOMERS_PER_PAGE, after))
        .await
        .map_err(unavailable)?;
    let next = match (page.has_more, page.items.last()) {
        (true, Some(last)) => {
            let last = ids::format(Kind::Customer, last.id);
            let mut pairs = vec![("starting_after", last.as_str())];
            if !q.is_empty() {
                pairs.insert(0, ("q", q.as_str()));
            }
            Some(format!("/customers?{}", query_string(&pairs)))
        }
        _ => None,
    };
    let first = if q.is_empty() {
        "/customers".to_string()
    } else {
        format!("/customers?{}", query_string(&[("q", &q)]))
    };
    Ok(ListPage {
        layout: Layout::new("customers", operator, query.notice),
        rows: page.items.iter().map(CustomerRow::from).collect(),
        q,
        next,
        paged: after.is_some(),
        first,
        form,
        errors,
    })
}

/// `GET /customers?q=&starting_after=`: newest first, searchable.
pub async fn list(
    State(ledger): State<Ledger>,
    operator: Operator,
    Query(query): Query<ListQuery>,
) -> Response {
    match list_page(
        &ledger,
        &operator,
        query,
        CustomerForm::default(),
        FieldErrors::default(),
    )
    .await
    {
        Ok(page) => render(&page),
        Err(response) => response,
    }
}

/// `POST /customers`: creates a customer and opens its page.
pub async fn create(State(ledger): State<Ledger>, submitted: Submitted<CustomerForm>) -> Response {
    let form = submitted.form;
    let request = Request::CreateCustomer {
        name: form.name.trim().to_string(),
        email: optional(&form.email),
        external_id: optional(&form.external_id),
        metadata: Default::default(),
    };
    match ledger.execute(request).await {
        Ok(Outcome::Customer(customer)) => done(
            &customer_href(customer.id),
            &format!(
                "Customer {} created. Give them a wallet to start granting credit.",
                customer.name
            ),
        ),
        Ok(_) => done("/customers", "Customer created."),
        Err(error) => {
            let errors = form_errors(error);
            match list_page(
                &ledger,
                &submitted.operator,
                ListQuery::default(),
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

// ---- the customer page ----------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    wallet: Option<String>,
    entries_after: Option<String>,
    debit: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct GrantForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    recurrence: String,
    #[serde(default)]
    interval_count: String,
    #[serde(default)]
    rollover_max: String,
    #[serde(default)]
    description: String,
}

impl GrantForm {
    /// The purpose to preselect: promotional unless the operator chose.
    fn chosen_purpose(&self) -> &str {
        if self.purpose.is_empty() {
            "promotional"
        } else {
            &self.purpose
        }
    }

    fn chosen_recurrence(&self) -> &str {
        if self.recurrence.is_empty() {
            "none"
        } else {
            &self.recurrence
        }
    }

    /// The grant the API would create from the same fields.
    fn to_grant(&self, wallet_id: u128) -> Result<NewGrant, FieldErrors> {
        let purpose = Purpose::parse(self.chosen_purpose())
            .ok_or_else(|| FieldErrors::field("purpose", "Choose promotional, bundled or paid."))?;
        let priority = match optional(&self.priority) {
            None => None,
            Some(text) => match text.parse::<u8>() {
                Ok(p) if p <= 100 => Some(p),
                _ => {
                    return Err(FieldErrors::field(
                        "priority",
                        "Priority is a whole number from 0 to 100.",
                    ));
                }
            },
        };
        let expires_at = optional(&self.expires_at)
            .map(|text| parse_local("expires_at", &text))
            .transpose()?;
        let recurrence = match self.chosen_recurrence() {
            "none" => None,
            text => {
                let interval = Interval::parse(text).ok_or_else(|| {
                    FieldErrors::field(
                        "recurrence.interval",
                        "Choose none, day, week, month or year.",
                    )
                })?;
                let count = match optional(&self.interval_count) {
                    None => 1,
                    Some(text) => text.parse::<u32>().unwrap_or(0),
                };
                Some(Period::new(interval, count).ok_or_else(|| {
                    FieldErrors::field(
                        "recurrence.interval_count",
                        format!("Repeat every 1 to {} periods.", Period::COUNT_MAX),
                    )
                })?)
            }
        };
        Ok(NewGrant {
            wallet_id,
            amount: self.amount.trim().to_string(),
            purpose,
            priority,
            effective_at: None,
            expires_at,
            recurrence,
            rollover_max: optional(&self.rollover_max),
            description: optional(&self.description),
            metadata: Default::default(),
        })
    }
}

#[derive(Deserialize, Default)]
pub struct DebitForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize, Default)]
pub struct WalletForm {
    #[serde(default)]
    credit_system_id: String,
    #[serde(default)]
    overdraft_limit: String,
}

/// What a failed form brings back to the page.
#[derive(Default)]
struct Forms {
    /// The wallet the failed form was about.
    wallet: Option<u128>,
    grant: GrantForm,
    grant_errors: FieldErrors,
    debit: DebitForm,
    debit_errors: FieldErrors,
    new_wallet: WalletForm,
    new_wallet_errors: FieldErrors,
    /// An error about the page as a whole (a void that failed).
    alert: Option<String>,
}

pub struct CustomerView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub external_id: String,
    pub created: String,
    pub metadata: Vec<(String, String)>,
}

/// The share of each purpose in a wallet's positive balance, for the bar.
pub struct Shares {
    pub promotional: String,
    pub bundled: String,
    pub paid: String,
    pub any: bool,
}

impl Shares {
    fn new(view: &WalletView) -> Shares {
        let parts = [
            view.summary.promotional.atomic(),
            view.summary.bundled.atomic(),
            view.summary.paid.atomic(),
        ]
        .map(|v| v.max(0) as f64);
        let total: f64 = parts.iter().sum();
        let pct = |v: f64| {
            if total > 0.0 {
                format!("{:.2}", v / total * 100.0)
            } else {
                "0".to_string()
            }
        };
        Shares {
            promotional: pct(parts[0]),
            bundled: pct(parts[1]),
            paid: pct(parts[2]),
            any: total > 0.0,
        }
    }
}

/// A wallet in the switcher at the top of the page.
pub struct WalletTab {
    pub href: String,
    pub system: String,
    pub unit: String,
    pub balance: String,
    pub negative: bool,
    pub selected: bool,
    pub shares: Shares,
}

pub struct GrantRow {
    pub id: String,
    pub short: String,
    pub purpose: &'static str,
    pub priority: u8,
    pub amount: String,
    pub remaining: String,
    pub held: String,
    pub has_held: bool,
    pub status: &'static str,
    /// Remaining as a share of the cycle's amount, for the meter.
    pub left_pct: String,
    pub recurrence: String,
    pub cycle: u64,
    pub cycle_ends: Option<(String, String)>,
    pub next_renewal: Option<(String, String)>,
    pub expires: Option<(String, String)>,
    pub ended: String,
    pub description: String,
    /// Where it came from: a promotional credit's page, or nothing.
    pub promotion: Option<String>,
    pub can_void: bool,
    pub unheld: String,
}

fn recurrence_text(period: Option<Period>) -> String {
    match period {
        None => String::new(),
        Some(p) if p.count == 1 => match p.interval {
            Interval::Day => "daily".into(),
            Interval::Week => "weekly".into(),
            Interval::Month => "monthly".into(),
            Interval::Year => "yearly".into(),
        },
        Some(p) => format!("every {} {}s", p.count, p.interval.as_str()),
    }
}

fn grant_row(grant: &Grant, record: Option<&GrantRecord>, scale: Scale) -> GrantRow {
    let id = ids::format(Kind::Grant, grant.id.0);
    let full = grant
        .terms
        .amount
        .checked_add(grant.terms.rollover_max)
        .unwrap_or(grant.terms.amount)
        .atomic()
        .max(grant.remaining.atomic());
    let left_pct = if full > 0 {
        format!(
            "{:.1}",
            grant.remaining.atomic().max(0) as f64 / full as f64 * 100.0
        )
    } else {
        "0".into()
    };
    let rollover = if grant.terms.recurrence.is_some() && grant.terms.rollover_max.is_positive() {
        format!(
            ", rolls over up to {}",
            amount(grant.terms.rollover_max, scale)
        )
    } else {
        String::new()
    };
    GrantRow {
        short: short(&id),
        id,
        purpose: grant.terms.purpose.as_str(),
        priority: grant.terms.priority,
        amount: amount(grant.terms.amount, scale),
        remaining: amount(grant.remaining, scale),
        held: amount(grant.held, scale),
        has_held: grant.held.is_positive(),
        status: grant.display_status(),
        left_pct,
        recurrence: match grant.terms.recurrence {
            Some(_) => format!("{}{rollover}", recurrence_text(grant.terms.recurrence)),
            None => String::new(),
        },
        cycle: grant.cycle,
        cycle_ends: when_split(grant.cycle_end()),
        next_renewal: when_split(grant.next_renewal_at()),
        expires: when_split(grant.terms.expires_at),
        ended: when_opt(grant.ended_at),
        description: record
            .and_then(|r| r.description.clone())
            .unwrap_or_default(),
        promotion: record.and_then(|r| match r.source {
            Source::PromotionalCredit {
                promotional_credit_id,
                ..
            } => Some(ids::format(Kind::PromotionalCredit, promotional_credit_id)),
            Source::Api => None,
        }),
        can_void: matches!(grant.status, GrantStatus::Scheduled | GrantStatus::Active),
        unheld: amount(grant.unheld(), scale),
    }
}

pub struct EntryRow {
    pub id: String,
    pub sequence: u64,
    pub occurred: String,
    pub kind: &'static str,
    pub amount: String,
    pub positive: bool,
    pub balance_after: String,
    pub grant: Option<(String, String)>,
    pub purpose: &'static str,
    pub reference: String,
    pub reference_short: String,
}

fn entry_row(entry: &EntryRecord, purposes: &HashMap<u128, Purpose>) -> EntryRow {
    let id = ids::format(Kind::Entry, entry.id);
    EntryRow {
        id,
        sequence: entry.sequence,
        occurred: when(entry.occurred_at),
        kind: entry.kind.as_str(),
        amount: signed(entry.amount, entry.scale),
        positive: entry.amount.is_positive(),
        balance_after: amount(entry.balance_after, entry.scale),
        grant: entry.grant_id.map(|g| {
            let full = ids::format(Kind::Grant, g);
            (short(&full), full)
        }),
        purpose: entry
            .grant_id
            .and_then(|g| purposes.get(&g))
            .map_or("debt", |p| p.as_str()),
        reference_short: short(&entry.reference),
        reference: entry.reference.clone(),
    }
}

pub struct AllocationRow {
    pub grant: String,
    pub short: String,
    pub purpose: &'static str,
    pub amount: String,
}

/// The last test debit, shown after it was made.
pub struct DebitResult {
    pub id: String,
    pub amount: String,
    pub balance_after: String,
    pub created: String,
    pub description: String,
    pub allocations: Vec<AllocationRow>,
}

/// The selected wallet, in full.
pub struct WalletDetail {
    pub id: String,
    pub system: String,
    pub system_key: String,
    pub system_active: bool,
    pub unit: String,
    pub scale: u8,
    pub balance: String,
    pub negative: bool,
    pub available: String,
    pub held: String,
    pub has_held: bool,
    pub debt: String,
    pub has_debt: bool,
    pub overdraft_limit: String,
    pub spendable: String,
    pub promotional: String,
    pub bundled: String,
    pub paid: String,
    pub shares: Shares,
    pub next_expiry: Option<(String, String)>,
    pub grants: Vec<GrantRow>,
    pub past_grants: Vec<GrantRow>,
    pub entries: Vec<EntryRow>,
    pub older: Option<String>,
    pub newest: Option<String>,
    pub chart: String,
    pub chart_truncated: bool,
    pub debit: Option<DebitResult>,
    pub created: String,
}

/// A credit system the customer has no wallet in yet.
pub struct SystemOption {
    pub id: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "console/customer.html")]
struct CustomerPage {
    layout: Layout,
    customer: CustomerView,
    wallets: Vec<WalletTab>,
    wallet: Option<WalletDetail>,
    systems: Vec<SystemOption>,
    now: String,
    forms: Forms,
}

/// What the selected wallet's page needs from the store, read after the
/// wallet was brought up to date.
struct WalletReads {
    records: HashMap<u128, GrantRecord>,
    past: Vec<GrantRecord>,
    entries: crate::records::Page<EntryRecord>,
    purposes: HashMap<u128, Purpose>,
    chart: Option<PurposeLedger>,
    debit: Option<DebitRecord>,
}

async fn wallet_reads(
    ledger: &Ledger,
    view: &WalletView,
    entries_after: Option<u128>,
    debit: Option<u128>,
) -> Result<WalletReads, crate::error::Error> {
    let wallet_id = view.info.id;
    let live: Vec<u128> = view.wallet.grants.iter().map(|g| g.id.0).collect();
    ledger
        .read(move |c| {
            let mut records = HashMap::new();
            for id in &live {
                if let Some(record) = c.grant(*id)? {
                    records.insert(*id, record);
                }
            }
            let past: Vec<GrantRecord> = c
                .list_grants(wallet_id, None, PAST_GRANTS * 2, None)?
                .items
                .into_iter()
                .filter(|r| !records.contains_key(&r.grant.id.0))
                .take(PAST_GRANTS)
                .collect();
            let entries = c.list_entries(wallet_id, false, ENTRIES_PER_PAGE, entries_after)?;
            let mut purposes: HashMap<u128, Purpose> = records
                .values()
                .chain(&past)
                .map(|r| (r.grant.id.0, r.grant.terms.purpose))
                .collect();
            for entry in &entries.items {
                if let Some(grant_id) = entry.grant_id
                    && !purposes.contains_key(&grant_id)
                    && let Some(record) = c.grant(grant_id)?
                {
                    purposes.insert(grant_id, record.grant.terms.purpose);
                }
            }
            let chart = c.entries_with_purpose(wallet_id, CHART_ENTRIES)?;
            let debit = match debit {
                Some(id) => c.debit(id)?.filter(|d| d.wallet_id == wallet_id),
                None => None,
            };
            if let Some(debit) = &debit {
                for allocation in &debit.allocations {
                    if let Some(grant) = allocation.grant
                        && !purposes.contains_key(&grant.0)
                        && let Some(record) = c.grant(grant.0)?
                    {
                        purposes.insert(grant.0, record.grant.terms.purpose);
                    }
                }
            }
            Ok(WalletReads {
                records,
                past,
                entries,
                purposes,
                chart,
                debit,
            })
        })
        .await
}

fn wallet_detail(
    customer_id: u128,
    view: &WalletView,
    system: &CreditSystem,
    reads: WalletReads,
    entries_after: Option<u128>,
    now: Instant,
) -> WalletDetail {
    let scale = view.info.scale;
    let s = &view.summary;
    let grants = view
        .wallet
        .grants_in_drawdown_order()
        .into_iter()
        .map(|g| grant_row(g, reads.records.get(&g.id.0), scale))
        .collect();
    let past_grants = reads
        .past
        .iter()
        .map(|r| grant_row(&r.grant, Some(r), scale))
        .collect();
    let entries: Vec<EntryRow> = reads
        .entries
        .items
        .iter()
        .map(|e| entry_row(e, &reads.purposes))
        .collect();
    let base = wallet_href(customer_id, view.info.id);
    let older = match (reads.entries.has_more, entries.last()) {
        (true, Some(last)) => Some(format!(
            "{base}&{}#ledger",
            query_string(&[("entries_after", &last.id)])
        )),
        _ => None,
    };
    let newest = entries_after.map(|_| format!("{base}#ledger"));
    let chart_id = format!("chart-{}", ids::format(Kind::Wallet, view.info.id));
    let (chart, chart_truncated) = match &reads.chart {
        Some(data) => {
            let points: Vec<chart::Point> = data
                .entries
                .iter()
                .map(|(e, purpose)| chart::Point {
                    kind: e.kind,
                    amount: e.amount,
                    balance_after: e.balance_after,
                    occurred_at: e.occurred_at,
                    purpose: *purpose,
                    grant: e.grant_id.map(|g| ids::format(Kind::Grant, g)),
                })
                .collect();
            let current = chart::Stack {
                promotional: i128::from(data.promotional.atomic()),
                bundled: i128::from(data.bundled.atomic()),
                paid: i128::from(data.paid.atomic()),
                debt: i128::from(data.debt.atomic()),
            };
            let svg = chart::render(&chart::Chart {
                id: &chart_id,
                scale,
                unit: &system.unit,
                opening: chart::opening(current, &points),
                points: &points,
                now,
            });
            let truncated = data.entries.first().is_some_and(|(e, _)| e.sequence > 1);
            (svg, truncated)
        }
        None => (String::new(), false),
    };
    let debit = reads.debit.as_ref().map(|d| DebitResult {
        id: ids::format(Kind::Debit, d.id),
        amount: amount(d.amount, scale),
        balance_after: amount(d.balance_after, scale),
        created: when(d.created_at),
        description: d.description.clone().unwrap_or_default(),
        allocations: d
            .allocations
            .iter()
            .map(|a| match a.grant {
                Some(g) => {
                    let full = ids::format(Kind::Grant, g.0);
                    AllocationRow {
                        short: short(&full),
                        grant: full,
                        purpose: reads.purposes.get(&g.0).map_or("", |p| p.as_str()),
                        amount: amount(a.amount, scale),
                    }
                }
                None => AllocationRow {
                    grant: String::new(),
                    short: "overdraft".into(),
                    purpose: "debt",
                    amount: amount(a.amount, scale),
                },
            })
            .collect(),
    });
    WalletDetail {
        id: ids::format(Kind::Wallet, view.info.id),
        system: system.name.clone(),
        system_key: system.key.clone(),
        system_active: system.active,
        unit: system.unit.clone(),
        scale: scale.places(),
        balance: amount(s.balance, scale),
        negative: s.balance.is_negative(),
        available: amount(s.available, scale),
        held: amount(s.held, scale),
        has_held: s.held.is_positive(),
        debt: amount(s.debt, scale),
        has_debt: s.debt.is_positive(),
        overdraft_limit: amount(s.overdraft_limit, scale),
        spendable: amount(s.spendable, scale),
        promotional: amount(s.promotional, scale),
        bundled: amount(s.bundled, scale),
        paid: amount(s.paid, scale),
        shares: Shares::new(view),
        next_expiry: s.next_expiry.map(|(at, a)| (when(at), amount(a, scale))),
        grants,
        past_grants,
        entries,
        older,
        newest,
        chart,
        chart_truncated,
        debit,
        created: when(view.info.created_at),
    }
}

async fn customer_page(
    ledger: &Ledger,
    operator: &Operator,
    customer_id: u128,
    query: ShowQuery,
    forms: Forms,
) -> Result<CustomerPage, Response> {
    let Some(customer) = ledger
        .read(move |c| c.customer(customer_id))
        .await
        .map_err(unavailable)?
    else {
        return Err(not_found(operator));
    };
    let mut infos = ledger
        .read(move |c| c.list_wallets(Some(customer_id), None, 100, None))
        .await
        .map_err(unavailable)?
        .items;
    infos.reverse();
    let mut wallets: Vec<(WalletView, CreditSystem)> = Vec::with_capacity(infos.len());
    for info in &infos {
        let view = history::current(ledger, info.id)
            .await
            .map_err(unavailable)?;
        let system_id = info.credit_system_id;
        let Some(system) = ledger
            .read(move |c| c.credit_system(system_id))
            .await
            .map_err(unavailable)?
        else {
            continue;
        };
        wallets.push((view, system));
    }
    let asked = forms.wallet.or_else(|| {
        query
            .wallet
            .as_deref()
            .and_then(|w| ids::parse(Kind::Wallet, w))
    });
    let selected = asked
        .and_then(|id| wallets.iter().position(|(v, _)| v.info.id == id))
        .unwrap_or(0);
    let entries_after = query
        .entries_after
        .as_deref()
        .and_then(|e| ids::parse(Kind::Entry, e));
    let debit = query
        .debit
        .as_deref()
        .and_then(|d| ids::parse(Kind::Debit, d));
    let now = ledger.now();
    let wallet = match wallets.get(selected) {
        Some((view, system)) => {
            let reads = wallet_reads(ledger, view, entries_after, debit)
                .await
                .map_err(unavailable)?;
            Some(wallet_detail(
                customer_id,
                view,
                system,
                reads,
                entries_after,
                now,
            ))
        }
        None => None,
    };
    let tabs = wallets
        .iter()
        .enumerate()
        .map(|(i, (view, system))| WalletTab {
            href: wallet_href(customer_id, view.info.id),
            system: system.name.clone(),
            unit: system.unit.clone(),
            balance: amount(view.summary.balance, view.info.scale),
            negative: view.summary.balance.is_negative(),
            selected: i == selected,
            shares: Shares::new(view),
        })
        .collect();
    let systems = credit_systems::all(ledger)
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter(|cs| cs.active && !wallets.iter().any(|(_, s)| s.id == cs.id))
        .map(|cs| SystemOption {
            id: ids::format(Kind::CreditSystem, cs.id),
            label: format!("{} ({})", cs.name, cs.unit),
        })
        .collect();
    Ok(CustomerPage {
        layout: Layout::new("customers", operator, query.notice),
        customer: CustomerView {
            id: ids::format(Kind::Customer, customer.id),
            name: customer.name.clone(),
            email: customer.email.clone().unwrap_or_default(),
            external_id: customer.external_id.clone().unwrap_or_default(),
            created: when(customer.created_at),
            metadata: customer.metadata.into_iter().collect(),
        },
        wallets: tabs,
        wallet,
        systems,
        now: when(now),
        forms,
    })
}

/// Renders the customer page again after a failed form (422).
async fn again(ledger: &Ledger, operator: &Operator, customer_id: u128, forms: Forms) -> Response {
    match customer_page(ledger, operator, customer_id, ShowQuery::default(), forms).await {
        Ok(page) => render_with(StatusCode::UNPROCESSABLE_ENTITY, &page),
        Err(response) => response,
    }
}

/// `GET /customers/{id}?wallet=&entries_after=`.
pub async fn show(
    State(ledger): State<Ledger>,
    operator: Operator,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Response {
    let Some(customer_id) = ids::parse(Kind::Customer, &id) else {
        return not_found(&operator);
    };
    match customer_page(&ledger, &operator, customer_id, query, Forms::default()).await {
        Ok(page) => render(&page),
        Err(response) => response,
    }
}

/// `POST /customers/{id}/wallets`.
pub async fn create_wallet(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<WalletForm>,
) -> Response {
    let Some(customer_id) = ids::parse(Kind::Customer, &id) else {
        return not_found(&submitted.operator);
    };
    let form = submitted.form;
    let result = match ids::parse(Kind::CreditSystem, form.credit_system_id.trim()) {
        None => Err(FieldErrors::field(
            "credit_system_id",
            "Choose a credit system.",
        )),
        Some(credit_system_id) => ledger
            .execute(Request::CreateWallet {
                customer_id,
                credit_system_id,
                overdraft_limit: optional(&form.overdraft_limit),
                low_balance_threshold: None,
            })
            .await
            .map_err(form_errors),
    };
    match result {
        Ok(Outcome::Wallet(view)) => done(
            &wallet_href(customer_id, view.info.id),
            "Wallet created. Add a grant to give it balance.",
        ),
        Ok(_) => done(&customer_href(customer_id), "Wallet created."),
        Err(errors) => {
            let forms = Forms {
                new_wallet: form,
                new_wallet_errors: errors,
                ..Forms::default()
            };
            again(&ledger, &submitted.operator, customer_id, forms).await
        }
    }
}

/// The wallet behind a path id, with its owner and credit system.
async fn wallet_owner(
    ledger: &Ledger,
    wallet_id: u128,
) -> Result<Option<(u128, CreditSystem)>, crate::error::Error> {
    ledger
        .read(move |c| {
            let Some(info) = c.wallet_info(wallet_id)? else {
                return Ok(None);
            };
            Ok(c.credit_system(info.credit_system_id)?
                .map(|cs| (info.customer_id, cs)))
        })
        .await
}

/// `POST /wallets/{id}/grants`.
pub async fn add_grant(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<GrantForm>,
) -> Response {
    let Some(wallet_id) = ids::parse(Kind::Wallet, &id) else {
        return not_found(&submitted.operator);
    };
    let (customer_id, system) = match wallet_owner(&ledger, wallet_id).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return not_found(&submitted.operator),
        Err(error) => return unavailable(error),
    };
    let form = submitted.form;
    let result = match form.to_grant(wallet_id) {
        Ok(grant) => ledger
            .execute(Request::AddGrant(grant))
            .await
            .map_err(form_errors),
        Err(errors) => Err(errors),
    };
    match result {
        Ok(Outcome::Grant(record)) => {
            let g = &record.grant;
            let what = format!(
                "{} {} {}",
                amount(g.terms.amount, record.scale),
                system.unit,
                g.terms.purpose.as_str()
            );
            let notice = if g.status == GrantStatus::Scheduled {
                format!("Scheduled a grant of {what}.")
            } else {
                format!("Granted {what} ({}).", ids::format(Kind::Grant, g.id.0))
            };
            done(&wallet_href(customer_id, wallet_id), &notice)
        }
        Ok(_) => done(&wallet_href(customer_id, wallet_id), "Grant added."),
        Err(errors) => {
            let forms = Forms {
                wallet: Some(wallet_id),
                grant: form,
                grant_errors: errors,
                ..Forms::default()
            };
            again(&ledger, &submitted.operator, customer_id, forms).await
        }
    }
}

/// `POST /wallets/{id}/debits`: a test debit, shown with its allocations.
pub async fn test_debit(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<DebitForm>,
) -> Response {
    let Some(wallet_id) = ids::parse(Kind::Wallet, &id) else {
        return not_found(&submitted.operator);
    };
    let (customer_id, system) = match wallet_owner(&ledger, wallet_id).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return not_found(&submitted.operator),
        Err(error) => return unavailable(error),
    };
    let form = submitted.form;
    let debit = NewDebit {
        wallet_id,
        amount: form.amount.trim().to_string(),
        description: optional(&form.description),
        metadata: Default::default(),
    };
    match ledger.execute(Request::Debit(debit)).await {
        Ok(Outcome::Debit(d)) => {
            let id = ids::format(Kind::Debit, d.id);
            let parts = d.allocations.len();
            done(
                &format!(
                    "{}&{}",
                    wallet_href(customer_id, wallet_id),
                    query_string(&[("debit", &id)])
                ),
                &format!(
                    "Debited {} {} from {} {}. Balance now {}.",
                    amount(d.amount, d.scale),
                    system.unit,
                    parts,
                    if parts == 1 { "grant" } else { "grants" },
                    amount(d.balance_after, d.scale),
                ),
            )
        }
        Ok(_) => done(&wallet_href(customer_id, wallet_id), "Debited."),
        Err(error) => {
            let forms = Forms {
                wallet: Some(wallet_id),
                debit: form,
                debit_errors: form_errors(error),
                ..Forms::default()
            };
            again(&ledger, &submitted.operator, customer_id, forms).await
        }
    }
}

/// `POST /grants/{id}/void`.
pub async fn void_grant(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<Empty>,
) -> Response {
    let Some(grant_id) = ids::parse(Kind::Grant, &id) else {
        return not_found(&submitted.operator);
    };
    let record = match history::grant(&ledger, grant_id).await {
        Ok(record) => record,
        Err(crate::error::Error::NotFound { .. }) => return not_found(&submitted.operator),
        Err(error) => return unavailable(error),
    };
    let (customer_id, system) = match wallet_owner(&ledger, record.wallet_id).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return not_found(&submitted.operator),
        Err(error) => return unavailable(error),
    };
    let full = ids::format(Kind::Grant, grant_id);
    match ledger.execute(Request::VoidGrant { id: grant_id }).await {
        Ok(_) => {
            let unheld = record.grant.unheld();
            let forfeited = if unheld.is_positive() {
                format!(
                    "its unheld {} {} was forfeited",
                    amount(unheld, record.scale),
                    system.unit
                )
            } else {
                "it had nothing left to forfeit".to_string()
            };
            let renewal = if record.grant.terms.recurrence.is_some() {
                " and it will not renew"
            } else {
                ""
            };
            done(
                &wallet_href(customer_id, record.wallet_id),
                &format!("Voided {full}: {forfeited}{renewal}."),
            )
        }
        Err(error) => {
            let message = crate::wire::ApiError::from(error).message;
            let forms = Forms {
                wallet: Some(record.wallet_id),
                alert: Some(format!("Could not void {full}: {message}.")),
                ..Forms::default()
            };
            again(&ledger, &submitted.operator, customer_id, forms).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group("0"), "0");
        assert_eq!(group("999"), "999");
        assert_eq!(group("1000"), "1,000");
        assert_eq!(group("-1234567.125"), "-1,234,567.125");
        assert_eq!(group("100000.5"), "100,000.5");
    }

    #[test]
    fn ledger_messages_read_as_sentences() {
        assert_eq!(
            sentence("amount must be a decimal number in a string, such as \"100\" or \"12.5\""),
            "Amount must be a decimal number, such as \"100\" or \"12.5\"."
        );
        assert_eq!(
            sentence("must be after effective_at and now"),
            "Must be in the future."
        );
        assert_eq!(sentence("Done."), "Done.");
        assert_eq!(
            sentence("overdraft_limit must not be negative"),
            "Overdraft limit must not be negative."
        );
        assert_eq!(sentence(""), "");
    }

    #[test]
    fn shortens_ids() {
        assert_eq!(short("gr_01JABCDEFGHJKMNPQRSTVWXYZ0"), "gr_…VWXYZ0");
        assert_eq!(short("debt"), "debt");
    }

    #[test]
    fn a_grant_form_reads_as_the_api_would() {
        let form = GrantForm {
            amount: " 100 ".into(),
            purpose: "bundled".into(),
            priority: "".into(),
            expires_at: "2025-03-01T00:00".into(),
            recurrence: "month".into(),
            interval_count: "".into(),
            rollover_max: "20".into(),
            description: "".into(),
        };
        let grant = form.to_grant(7).unwrap();
        assert_eq!(grant.amount, "100");
        assert_eq!(grant.purpose, Purpose::Bundled);
        assert_eq!(grant.priority, None);
        assert_eq!(
            grant.expires_at.unwrap().to_rfc3339(),
            "2025-03-01T00:00:00+00:00"
        );
        assert_eq!(grant.recurrence, Period::new(Interval::Month, 1));
        assert_eq!(grant.rollover_max.as_deref(), Some("20"));
        assert_eq!(grant.description, None);

        let bad = GrantForm {
            priority: "101".into(),
            ..GrantForm::default()
        };
        assert!(bad.to_grant(7).unwrap_err().get("priority").is_some());
        let bad = GrantForm {
            expires_at: "tomorrow".into(),
            ..GrantForm::default()
        };
        assert!(bad.to_grant(7).unwrap_err().get("expires_at").is_some());
        let bad = GrantForm {
            recurrence: "week".into(),
            interval_count: "0".into(),
            ..GrantForm::default()
        };
        assert!(
            bad.to_grant(7)
                .unwrap_err()
                .get("recurrence.interval_count")
                .is_some()
        );
    }
}
