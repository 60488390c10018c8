//! What does a webhook cost: verifying one delivery (Cloudinary's appended-secret
//! SHA-1, FactPulse's HMAC-SHA256) at several body sizes, and the memory of the
//! hub's store of unclaimed deliveries under a flood of unknown task ids (it
//! must stay flat once full). Not a test: it asserts nothing, it prints figures.
//!
//! Run with `cargo bench --bench webhooks`.

#![allow(clippy::disallowed_methods)] // reads real time: a test's or benchmark's own timing

use std::time::{Duration, Instant, UNIX_EPOCH};

use cap::Cap;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use secrecy::SecretString;
use sha1::{Digest, Sha1};
use taskpoll::clock::ManualClock;
use taskpoll::{Client, ProviderConfig};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const TIMESTAMP: u64 = 1_764_640_000;

fn client(capacity: usize) -> Client {
    let clock = std::sync::Arc::new(ManualClock::starting_at(UNIX_EPOCH + Duration::from_secs(TIMESTAMP)));
    Client::builder()
        .clock(clock)
        .webhook_capacity(capacity)
        .provider(ProviderConfig::new("cloudinary").basic("key", "api-secret").server_variable("cloud_name", "c"))
        .provider(ProviderConfig::new("factpulse").api_key("k").webhook_secret(SecretString::from("whsec")))
        .build()
        .expect("client")
}

fn cloudinary(body: &[u8]) -> HeaderMap {
    let mut hasher = Sha1::new();
    hasher.update(body);
    hasher.update(TIMESTAMP.to_string());
    hasher.update("api-secret");
    let mut headers = HeaderMap::new();
    headers.insert("x-cld-signature", HeaderValue::from_str(&hex::encode(hasher.finalize())).expect("hex"));
    headers.insert("x-cld-timestamp", HeaderValue::from_str(&TIMESTAMP.to_string()).expect("digits"));
    headers
}

fn factpulse(body: &[u8]) -> HeaderMap {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec").expect("any key length");
    mac.update(body);
    let value = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut headers = HeaderMap::new();
    headers.insert("x-webhook-signature", HeaderValue::from_str(&value).expect("hex"));
    headers
}

fn padded(prefix: &str, size: usize) -> Vec<u8> {
    let pad = size.saturating_sub(prefix.len() + 16);
    format!("{prefix},\"pad\":\"{}\"}}", "x".repeat(pad)).into_bytes()
}

fn main() {
    let client = client(10_000);
    println!("verify_webhook (one thread, includes JSON parsing of the body):");
    for size in [1_024, 16 * 1_024, 256 * 1_024] {
        let cld = padded(r#"{"task_id":"t1","http_status":200,"data":{"tags":["a"]}"#, size);
        let fp = padded(r#"{"taskId":"t1","status":"SUCCESS","result":{"status":"SUCCESS"}"#, size);
        for (provider, body, headers) in [("cloudinary", &cld, cloudinary(&cld)), ("factpulse", &fp, factpulse(&fp))] {
            client.verify_webhook(provider, &headers, body).expect("valid");
            let rounds = (64 * 1024 * 1024 / size).clamp(200, 20_000);
            let started = Instant::now();
            for _ in 0..rounds {
                client.verify_webhook(provider, &headers, body).expect("valid");
            }
            let each = started.elapsed() / rounds as u32;
            println!("  {provider:<10} {:>4} KiB body: {:>8.1} µs per delivery", size / 1024, each.as_secs_f64() * 1e6);
        }
    }

    println!("unclaimed store under a flood of unknown ids (capacity 10,000):");
    let flood = self::client(10_000);
    let baseline = ALLOCATOR.allocated();
    for n in 1..=100_000u32 {
        let body = format!(r#"{{"taskId":"flood-{n}","status":"SUCCESS","result":null}}"#).into_bytes();
        flood.accept_webhook("factpulse", &factpulse(&body), &body).expect("valid");
        if n % 20_000 == 0 || n == 10_000 {
            let live = ALLOCATOR.allocated().saturating_sub(baseline);
            println!(
                "  after {n:>6} deliveries: {:>6} kept, {:>6} evicted, {:>6} KiB live ({} B per kept delivery)",
                flood.webhooks().unclaimed(),
                flood.webhooks().evicted(),
                live / 1024,
                live / flood.webhooks().unclaimed().max(1)
            );
        }
    }
}
