//! Console sessions and CSRF over plain HTTP: the cookie's flags, forms
//! refused without the session's token, sign-in refusing non-admin keys and
//! forged login forms, and sessions ending with their key or on sign-out.

mod common;

use common::{ADMIN_KEY, Server};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in page"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

fn cookie_pair(response: &reqwest::Response, name: &str) -> (String, String) {
    let header = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"));
    let pair = header.split(';').next().unwrap().to_string();
    (pair, header)
}

/// Signs in with `key`; returns the session cookie pair and the whole header.
async fn sign_in(server: &Server, key: &str) -> reqwest::Response {
    let http = client();
    let page = http
        .get(format!("{}/login", server.base))
        .send()
        .await
        .unwrap();
    let (login_cookie, _) = cookie_pair(&page, "credstack_login");
    let token = hidden(&page.text().await.unwrap(), "login_token");
    http.post(format!("{}/login", server.base))
        .header(COOKIE, login_cookie)
        .form(&[
            ("api_key", key),
            ("login_token", &token),
            ("next", "/credit-systems"),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn session_cookie_is_http_only_strict_and_expiring() {
    let server = Server::start().await;
    let response = sign_in(&server, ADMIN_KEY).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/credit-systems");
    let (_, header) = cookie_pair(&response, "credstack_session");
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    assert!(header.contains("Max-Age=43200"), "{header}");
    assert!(header.contains("Path=/"), "{header}");
}

#[tokio::test]
async fn sign_in_refuses_other_keys_and_forged_forms() {
    let server = Server::start().await;
    let response = sign_in(&server, "csk_wrong").await;
    assert_eq!(response.status(), 401);
    let usage = server
        .post("/v1/api_keys", json!({"name": "m", "scope": "usage"}))
        .await
        .ok()
        .str("secret");
    assert_eq!(sign_in(&server, &usage).await.status(), 401);
    // A login form posted without the matching login cookie (from another site).
    let forged = client()
        .post(format!("{}/login", server.base))
        .form(&[
            ("api_key", ADMIN_KEY),
            ("login_token", "guess"),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(
        forged
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .all(|v| !v.to_str().unwrap().starts_with("credstack_session"))
    );
}

#[tokio::test]
async fn forms_without_the_session_token_change_nothing() {
    let server = Server::start().await;
    let response = sign_in(&server, ADMIN_KEY).await;
    let (session, _) = cookie_pair(&response, "credstack_session");
    let http = client();
    let page = http
        .get(format!("{}/credit-systems", server.base))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = hidden(&page.text().await.unwrap(), "csrf");
    let form = |token: &str| {
        vec![
            ("csrf", token.to_string()),
            ("name", "Forged".to_string()),
            ("key", "forged".to_string()),
            ("unit", "x".to_string()),
            ("scale", "0".to_string()),
        ]
    };
    for token in ["", "wrong"] {
        let refused = http
            .post(format!("{}/credit-systems", server.base))
            .header(COOKIE, &session)
            .form(&form(token))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "token {token:?}");
    }
    let listed = server.get("/v1/credit_systems").await.ok().body;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    // Without a session at all, the form goes to sign-in.
    let anonymous = http
        .post(format!("{}/credit-systems", server.base))
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    assert!(
        anonymous.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
    // With the token, it works.
    let accepted = http
        .post(format!("{}/credit-systems", server.base))
        .header(COOKIE, &session)
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 303);
    let listed = server.get("/v1/credit_systems").await.ok().body;
    assert_eq!(listed["data"][0]["key"], "forged");
}

#[tokio::test]
async fn sessions_end_on_sign_out_and_with_their_key() {
    let server = Server::start().await;
    let key = server
        .post("/v1/api_keys", json!({"name": "ops", "scope": "admin"}))
        .await
        .ok();
    let (key_id, secret) = (key.id(), key.str("secret"));
    let http = client();
    let page_status = |session: String| {
        let http = http.clone();
        let url = format!("{}/credit-systems", server.base);
        async move {
            http.get(url)
                .header(COOKIE, session)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Sign-out ends the session.
    let (session, _) = cookie_pair(&sign_in(&server, &secret).await, "credstack_session");
    let page = http
        .get(format!("{}/credit-systems", server.base))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    let csrf = hidden(&page.text().await.unwrap(), "csrf");
    let out = http
        .post(format!("{}/logout", server.base))
        .header(COOKIE, &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(page_status(session).await, 303, "signed out");
    // Deleting the key ends its sessions.
    let (session, _) = cookie_pair(&sign_in(&server, &secret).await, "credstack_session");
    assert_eq!(page_status(session.clone()).await, 200);
    server
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/api_keys/{key_id}"),
            None,
            &[],
        )
        .await
        .ok();
    assert_eq!(page_status(session).await, 303, "the key is gone");
}

#[tokio::test]
async fn sign_in_returns_only_to_this_site() {
    let server = Server::start().await;
    for next in [
        "//evil.example/x",
        "/\t/evil.example/x",
        "/\\evil.example",
        "https://evil.example/",
        "/%0a",
    ] {
        let http = client();
        let page = http
            .get(format!("{}/login", server.base))
            .send()
            .await
            .unwrap();
        let (login_cookie, _) = cookie_pair(&page, "credstack_login");
        let token = hidden(&page.text().await.unwrap(), "login_token");
        let response = http
            .post(format!("{}/login", server.base))
            .header(COOKIE, login_cookie)
            .form(&[
                ("api_key", ADMIN_KEY),
                ("login_token", &token),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "next {next:?}");
        let location = response.headers()[LOCATION].to_str().unwrap().to_string();
        let expected = if next == "/%0a" { "/%0a" } else { "/" };
        assert_eq!(location, expected, "next {next:?}");
    }
}
