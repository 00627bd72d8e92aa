//! The processor's public payment endpoints, through real HTTP on port 0: every rule of
//! RINHA-2025.md section 3 about `POST /payments` and `GET /payments/{id}`.

mod processor_support;

use std::time::{Duration, Instant};

use processor_support::{call, new_id, payment, post, post_payment, Client, AT};
use rinha_emulator::{spawn, Config, Running};

fn processor() -> Running {
    spawn(Config::for_tests(5)).expect("spawn processor")
}

#[tokio::test]
async fn a_payment_is_stored_and_read_back() {
    let processor = processor();
    let id = new_id();
    let response = post_payment(processor.addr, &id).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body,
        r#"{"message":"payment processed successfully"}"#
    );
    assert!(response
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));

    let read = call(processor.addr, "GET", &format!("/payments/{id}"), &[], "").await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.body,
        format!(r#"{{"correlationId":"{id}","amount":19.90,"requestedAt":"{AT}"}}"#)
    );
    let stored = processor.payment(id.parse().unwrap()).expect("stored");
    assert_eq!(stored.cents, 1990);
}

#[tokio::test]
async fn an_unknown_payment_is_404() {
    let processor = processor();
    let path = format!("/payments/{}", new_id());
    assert_eq!(
        call(processor.addr, "GET", &path, &[], "").await.status,
        404
    );
    assert_eq!(
        call(processor.addr, "GET", "/payments/not-a-uuid", &[], "")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn property_names_match_case_insensitively() {
    let processor = processor();
    let id = new_id();
    let body = format!(r#"{{"CORRELATIONID":"{id}","Amount":19.90,"RequestedAt":"{AT}"}}"#);
    let response = call(processor.addr, "POST", "/payments", &[], &body).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(processor.payment(id.parse().unwrap()).is_some());
}

#[tokio::test]
async fn amounts_are_rounded_half_to_even_from_the_exact_text() {
    let processor = processor();
    for (amount, cents) in [
        ("19.905", 1990),
        ("19.915", 1992),
        ("19.9050000000000000001", 1991),
        ("1.99e1", 1990),
        ("\"19.90\"", 1990),
        ("0.005", 0),
    ] {
        let id = new_id();
        let response = post(processor.addr, &payment(&id, amount, AT)).await;
        assert_eq!(response.status, 200, "{amount}: {}", response.body);
        let stored = processor.payment(id.parse().unwrap()).expect("stored");
        assert_eq!(stored.cents, cents, "{amount}");
    }
}

#[tokio::test]
async fn requested_at_accepts_iso_8601_forms_and_echoes_milliseconds_utc() {
    let processor = processor();
    for (sent, echoed) in [
        ("2025-07-15T12:34:56Z", "2025-07-15T12:34:56.000Z"),
        ("2025-07-15T12:34:56.123+00:00", "2025-07-15T12:34:56.123Z"),
        ("2025-07-15T12:34:56.123456Z", "2025-07-15T12:34:56.123456Z"),
        ("2025-07-15T15:34:56.000+03:00", "2025-07-15T12:34:56.000Z"),
    ] {
        let id = new_id();
        let response = post(processor.addr, &payment(&id, "1", sent)).await;
        assert_eq!(response.status, 200, "{sent}");
        let read = call(processor.addr, "GET", &format!("/payments/{id}"), &[], "").await;
        assert_eq!(read.json()["requestedAt"], echoed, "{sent}");
    }
}

#[tokio::test]
async fn missing_or_invalid_fields_are_400_and_store_nothing() {
    let processor = processor();
    let id = new_id();
    let bodies = [
        String::from("not json"),
        String::from("[]"),
        String::new(),
        format!(r#"{{"amount":19.90,"requestedAt":"{AT}"}}"#),
        format!(r#"{{"correlationId":"{id}","requestedAt":"{AT}"}}"#),
        format!(r#"{{"correlationId":"{id}","amount":19.90}}"#),
        payment("not-a-uuid", "19.90", AT),
        payment(&id, "\"abc\"", AT),
        payment(&id, "true", AT),
        payment(&id, "-1", AT),
        payment(&id, "19.90", "yesterday"),
        format!(r#"{{"correlationId":"{id}","amount":19.90,"requestedAt":null}}"#),
    ];
    for body in &bodies {
        let response = post(processor.addr, body).await;
        assert_eq!(response.status, 400, "{body}");
    }
    assert_eq!(processor.stored(), 0);
}

#[tokio::test]
async fn a_duplicate_correlation_id_is_422_and_changes_nothing() {
    let processor = processor();
    let id = new_id();
    assert_eq!(post_payment(processor.addr, &id).await.status, 200);
    let again = post(processor.addr, &payment(&id, "5.00", AT)).await;
    assert_eq!(again.status, 422);
    assert_eq!(processor.stored(), 1);
    assert_eq!(processor.payment(id.parse().unwrap()).unwrap().cents, 1990);
    // The same id in upper case is the same UUID.
    let upper = id.to_uppercase();
    assert_eq!(post_payment(processor.addr, &upper).await.status, 422);
}

#[tokio::test]
async fn failure_is_500_and_stores_nothing_but_reads_still_work() {
    let processor = processor();
    let stored = new_id();
    assert_eq!(post_payment(processor.addr, &stored).await.status, 200);
    processor.set_failure(true);
    processor.set_delay(300);
    let id = new_id();
    let started = Instant::now();
    let response = post_payment(processor.addr, &id).await;
    // The delay comes first, then the failure.
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status, 500);
    assert!(processor.payment(id.parse().unwrap()).is_none());

    // GET /payments/{id} ignores both the delay and the failure.
    let started = Instant::now();
    let read = call(
        processor.addr,
        "GET",
        &format!("/payments/{stored}"),
        &[],
        "",
    )
    .await;
    assert_eq!(read.status, 200);
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn the_delay_is_read_at_arrival_and_applied_before_the_answer() {
    let processor = processor();
    processor.set_delay(400);
    let id = new_id();
    let started = Instant::now();
    let posting = tokio::spawn({
        let addr = processor.addr;
        let id = id.clone();
        async move { post_payment(addr, &id).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    processor.set_delay(0);
    // Not stored yet: the insert comes after the delay.
    assert!(processor.payment(id.parse().unwrap()).is_none());
    let response = posting.await.unwrap();
    assert_eq!(response.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(390),
        "{:?}",
        started.elapsed()
    );
    assert!(processor.payment(id.parse().unwrap()).is_some());
}

#[tokio::test]
async fn a_payment_is_stored_even_when_the_caller_hangs_up_during_the_delay() {
    let processor = processor();
    processor.set_delay(300);
    let id = new_id();
    let mut client = Client::connect(processor.addr).await;
    client
        .send("POST", "/payments", &[], &payment(&id, "19.90", AT))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(client);
    assert!(processor.payment(id.parse().unwrap()).is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(processor.payment(id.parse().unwrap()).is_some());
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let processor = processor();
    let addr = processor.addr;
    for path in [
        "/",
        "/payment",
        "/payments/a/b",
        "/admin",
        "/admin/configurations/other",
    ] {
        assert_eq!(call(addr, "GET", path, &[], "").await.status, 404, "{path}");
    }
    for (method, path, allow) in [
        ("GET", "/payments", "POST"),
        ("POST", "/payments/service-health", "GET"),
        ("DELETE", &format!("/payments/{}", new_id()) as &str, "GET"),
        ("POST", "/admin/payments-summary", "GET"),
        ("GET", "/admin/configurations/delay", "PUT"),
        ("GET", "/admin/purge-payments", "POST"),
    ] {
        let response = call(addr, method, path, &[], "").await;
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.header("allow"), Some(allow));
    }
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let processor = processor();
    let mut client = Client::connect(processor.addr).await;
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    for id in &ids {
        let response = client
            .call("POST", "/payments", &[], &payment(id, "1.00", AT))
            .await;
        assert_eq!(response.status, 200);
    }
    // Three requests in one write: a payment, a duplicate, a read.
    let mut pipelined =
        processor_support::request_bytes("POST", "/payments", &[], &payment(&new_id(), "2.00", AT));
    pipelined.extend(processor_support::request_bytes(
        "POST",
        "/payments",
        &[],
        &payment(&ids[0], "2.00", AT),
    ));
    pipelined.extend(processor_support::request_bytes(
        "GET",
        &format!("/payments/{}", ids[1]),
        &[],
        "",
    ));
    client.send_raw(&pipelined).await.unwrap();
    assert_eq!(client.recv().await.unwrap().status, 200);
    assert_eq!(client.recv().await.unwrap().status, 422);
    let read = client.recv().await.unwrap();
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["correlationId"], ids[1].as_str());
    assert_eq!(processor.stored(), 4);
}

#[tokio::test]
async fn dropping_a_running_processor_stops_it_promptly_even_with_payments_in_flight() {
    let processor = processor();
    let addr = processor.addr;
    processor.set_delay(5_000);
    let mut client = Client::connect(addr).await;
    client
        .send("POST", "/payments", &[], &payment(&new_id(), "1", AT))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    drop(processor);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The listener is gone with it.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
