//! Console: credit systems — list, create, deactivate and reactivate.

use super::session::Submitted;
use super::{FieldErrors, Layout, Operator, done, render, render_with};
use crate::engine::Request;
use crate::ids::{self, Kind};
use crate::ledger::Ledger;
use crate::records::CreditSystem;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Notice {
    notice: Option<String>,
}

/// A credit system as the page shows it.
pub struct Row {
    pub id: String,
    pub key: String,
    pub name: String,
    pub unit: String,
    pub scale: u8,
    pub active: bool,
}

impl From<&CreditSystem> for Row {
    fn from(cs: &CreditSystem) -> Row {
        Row {
            id: ids::format(Kind::CreditSystem, cs.id),
            key: cs.key.clone(),
            name: cs.name.clone(),
            unit: cs.unit.clone(),
            scale: cs.scale.places(),
            active: cs.active,
        }
    }
}

#[derive(Deserialize, Default)]
pub struct CreateForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    scale: String,
}

#[derive(Template)]
#[template(path = "console/credit_systems.html")]
struct Page {
    layout: Layout,
    rows: Vec<Row>,
    form: CreateForm,
    errors: FieldErrors,
}

/// Every credit system, newest first (the console lists up to 100).
pub async fn all(ledger: &Ledger) -> Result<Vec<CreditSystem>, crate::error::Error> {
    Ok(ledger
        .read(|c| c.list_credit_systems(100, None))
        .await?
        .items)
}

async fn page(
    ledger: &Ledger,
    operator: &Operator,
    notice: Option<String>,
    form: CreateForm,
    errors: FieldErrors,
) -> Result<Page, Response> {
    let rows = all(ledger).await.map_err(super::unavailable)?;
    Ok(Page {
        layout: Layout::new("credit-systems", operator, notice),
        rows: rows.iter().map(Row::from).collect(),
        form,
        errors,
    })
}

pub async fn list(
    State(ledger): State<Ledger>,
    operator: Operator,
    Query(q): Query<Notice>,
) -> Response {
    match page(
        &ledger,
        &operator,
        q.notice,
        CreateForm::default(),
        FieldErrors::default(),
    )
    .await
    {
        Ok(page) => render(&page),
        Err(response) => response,
    }
}

pub async fn create(State(ledger): State<Ledger>, submitted: Submitted<CreateForm>) -> Response {
    let form = submitted.form;
    let scale = if form.scale.trim().is_empty() {
        Ok(0)
    } else {
        form.scale.trim().parse::<u8>()
    };
    let result = match scale {
        Ok(scale) => {
            let request = Request::CreateCreditSystem {
                key: form.key.trim().to_string(),
                name: form.name.clone(),
                unit: form.unit.clone(),
                scale,
            };
            ledger
                .execute(request)
                .await
                .map_err(FieldErrors::from_error)
        }
        Err(_) => Err(FieldErrors::field(
            "scale",
            "Scale must be a whole number from 0 to 6.",
        )),
    };
    match result {
        Ok(_) => done(
            "/credit-systems",
            &format!("Credit system {} created.", form.key.trim()),
        ),
        Err(errors) => match page(&ledger, &submitted.operator, None, form, errors).await {
            Ok(page) => render_with(StatusCode::UNPROCESSABLE_ENTITY, &page),
            Err(response) => response,
        },
    }
}

#[derive(Deserialize)]
pub struct StatusForm {
    status: String,
}

pub async fn set_status(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<StatusForm>,
) -> Response {
    let Some(id) = ids::parse(Kind::CreditSystem, &id) else {
        return super::not_found(&submitted.operator);
    };
    let active = submitted.form.status == "active";
    let request = Request::UpdateCreditSystem {
        id,
        name: None,
        active: Some(active),
    };
    match ledger.execute(request).await {
        Ok(_) => done(
            "/credit-systems",
            if active {
                "Credit system reactivated."
            } else {
                "Credit system deactivated."
            },
        ),
        Err(error) => super::unavailable(error),
    }
}
