//! The processor's admin endpoints through real HTTP: the token, the summary (inclusive
//! window, exact cents, the fee), delay, failure and purge; and that the `Running` helpers
//! agree with what the endpoints report.

mod processor_support;

use processor_support::{call, new_id, payment, post_payment, TOKEN};
use rinha_emulator::{spawn, Config, Running};

fn processor(fee_percent: u32) -> Running {
    spawn(Config::for_tests(fee_percent)).expect("spawn processor")
}

#[tokio::test]
async fn admin_endpoints_need_the_token() {
    let processor = processor(5);
    let addr = processor.addr;
    let wrong = [("X-Rinha-Token", "124")];
    for headers in [&[][..], &wrong[..]] {
        for (method, path, body) in [
            ("GET", "/admin/payments-summary", ""),
            ("PUT", "/admin/configurations/token", r#"{"token":"x"}"#),
            ("PUT", "/admin/configurations/delay", r#"{"delay":10}"#),
            (
                "PUT",
                "/admin/configurations/failure",
                r#"{"failure":true}"#,
            ),
            ("POST", "/admin/purge-payments", ""),
        ] {
            let response = call(addr, method, path, headers, body).await;
            assert_eq!(response.status, 401, "{method} {path} {headers:?}");
        }
    }
    // Nothing was changed by the refused calls.
    let health = call(addr, "GET", "/payments/service-health", &[], "").await;
    assert_eq!(health.body, r#"{"failing":false,"minResponseTime":0}"#);
}

#[tokio::test]
async fn the_token_can_be_changed() {
    let processor = processor(5);
    let addr = processor.addr;
    let response = call(
        addr,
        "PUT",
        "/admin/configurations/token",
        &[TOKEN],
        r#"{"token":"s3cret"}"#,
    )
    .await;
    assert_eq!(response.status, 204);
    assert_eq!(response.body, "");
    assert_eq!(
        call(addr, "GET", "/admin/payments-summary", &[TOKEN], "")
            .await
            .status,
        401
    );
    let new = [("X-Rinha-Token", "s3cret")];
    assert_eq!(
        call(addr, "GET", "/admin/payments-summary", &new, "")
            .await
            .status,
        200
    );
    let bad = call(
        addr,
        "PUT",
        "/admin/configurations/token",
        &new,
        r#"{"tok":"x"}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn delay_and_failure_report_what_they_were() {
    let processor = processor(5);
    let addr = processor.addr;
    let put = |path: &'static str, body: &'static str| call(addr, "PUT", path, &[TOKEN], body);
    let response = put("/admin/configurations/delay", r#"{"delay":100}"#).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, r#"{"config":"delay","was":0,"is":100}"#);
    let response = put("/admin/configurations/delay", r#"{"Delay":20}"#).await;
    assert_eq!(response.body, r#"{"config":"delay","was":100,"is":20}"#);
    let response = put("/admin/configurations/failure", r#"{"failure":true}"#).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        r#"{"config":"failure","was":false,"is":true}"#
    );
    let response = put("/admin/configurations/failure", r#"{"failure":true}"#).await;
    assert_eq!(
        response.body,
        r#"{"config":"failure","was":true,"is":true}"#
    );
    let health = call(addr, "GET", "/payments/service-health", &[], "").await;
    assert_eq!(health.body, r#"{"failing":true,"minResponseTime":20}"#);
    for (path, body) in [
        ("/admin/configurations/delay", r#"{"delay":-5}"#),
        ("/admin/configurations/delay", r#"{"delay":"soon"}"#),
        ("/admin/configurations/delay", "{}"),
        ("/admin/configurations/failure", r#"{"failure":"yes"}"#),
        ("/admin/configurations/failure", "nope"),
    ] {
        assert_eq!(put(path, body).await.status, 400, "{path} {body}");
    }
    // The helpers see (and change) the same settings.
    assert_eq!(processor.set_delay(0), 20);
    assert!(processor.set_failure(false));
}

#[tokio::test]
async fn the_summary_counts_exact_cents_and_the_fee_half_to_even() {
    let processor = processor(5);
    let addr = processor.addr;
    for _ in 0..3 {
        assert_eq!(post_payment(addr, &new_id()).await.status, 200);
    }
    let response = call(addr, "GET", "/admin/payments-summary", &[TOKEN], "").await;
    assert_eq!(response.status, 200);
    // 3 x 19.90 = 59.70; 5 % of it is 2.985, rounded to the even cent 2.98.
    assert_eq!(
        response.body,
        r#"{"totalRequests":3,"totalAmount":59.70,"totalFee":2.98,"feePerTransaction":0.05}"#
    );
    let summary = processor.summary(None, None);
    assert_eq!(
        (
            summary.total_requests,
            summary.total_cents,
            summary.total_fee_cents
        ),
        (3, 5970, 298)
    );

    let fallback = spawn(Config::for_tests(15)).unwrap();
    for amount in ["0.10", "0.20", "0.30"] {
        let body = payment(&new_id(), amount, processor_support::AT);
        assert_eq!(
            call(fallback.addr, "POST", "/payments", &[], &body)
                .await
                .status,
            200
        );
    }
    // In f64, 0.1 + 0.2 + 0.3 is 0.6000000000000001; in cents it is 60, and 15 % is 9.
    let response = call(
        fallback.addr,
        "GET",
        "/admin/payments-summary",
        &[TOKEN],
        "",
    )
    .await;
    assert_eq!(
        response.body,
        r#"{"totalRequests":3,"totalAmount":0.60,"totalFee":0.09,"feePerTransaction":0.15}"#
    );
}

#[tokio::test]
async fn the_summary_window_is_inclusive_and_open_when_a_bound_is_missing() {
    let processor = processor(5);
    let addr = processor.addr;
    for at in [
        "2025-07-15T12:00:00.000Z",
        "2025-07-15T12:00:01.000Z",
        "2025-07-15T12:00:01.999Z",
        "2025-07-15T12:00:02.000Z",
        "2025-07-15T12:00:02.001Z",
    ] {
        let body = payment(&new_id(), "10.00", at);
        assert_eq!(
            call(addr, "POST", "/payments", &[], &body).await.status,
            200
        );
    }
    let count = |query: &'static str| async move {
        let path = format!("/admin/payments-summary{query}");
        let response = call(addr, "GET", &path, &[TOKEN], "").await;
        assert_eq!(response.status, 200, "{query}: {}", response.body);
        response.json()["totalRequests"].as_u64().unwrap()
    };
    assert_eq!(
        count("?from=2025-07-15T12:00:01.000Z&to=2025-07-15T12:00:02.000Z").await,
        3
    );
    assert_eq!(
        count("?from=2025-07-15T12:00:01.001Z&to=2025-07-15T12:00:01.999Z").await,
        1
    );
    assert_eq!(
        count("?from=2025-07-15T12:00:01%2B00:00&to=2025-07-15T12:00:02Z").await,
        3
    );
    assert_eq!(
        count("?from=2025-07-15T12:00:03.000Z&to=2025-07-15T12:00:04.000Z").await,
        0
    );
    assert_eq!(count("?from=2025-07-15T12:00:02.000Z").await, 5);
    assert_eq!(count("?to=2025-07-15T12:00:00.000Z").await, 5);
    assert_eq!(count("").await, 5);
    let bad = call(
        addr,
        "GET",
        "/admin/payments-summary?from=later",
        &[TOKEN],
        "",
    )
    .await;
    assert_eq!(bad.status, 400);
    let from = "2025-07-15T12:00:01Z".parse().ok();
    let to = "2025-07-15T12:00:02Z".parse().ok();
    assert_eq!(processor.summary(from, to).total_requests, 3);
}

#[tokio::test]
async fn purge_removes_every_payment() {
    let processor = processor(5);
    let addr = processor.addr;
    let id = new_id();
    assert_eq!(post_payment(addr, &id).await.status, 200);
    let response = call(addr, "POST", "/admin/purge-payments", &[TOKEN], "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, r#"{"message":"All payments purged."}"#);
    assert_eq!(processor.stored(), 0);
    let read = call(addr, "GET", &format!("/payments/{id}"), &[], "").await;
    assert_eq!(read.status, 404);
    // A purged id can be stored again.
    assert_eq!(post_payment(addr, &id).await.status, 200);
    processor.purge();
    let summary = call(addr, "GET", "/admin/payments-summary", &[TOKEN], "").await;
    assert_eq!(summary.json()["totalRequests"], 0);
}
