//! What the gateway pays per request to check a token: signature, claims and revocation lookup,
//! all from cache. Run: `cargo bench -p agora-kit --bench token_check`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::hint::black_box;

use agora_kit::jwt::{Claims, Revocation, SigningKey, StaticKeys, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let key = SigningKey::generate().unwrap();
    let source = StaticKeys::new(vec![key.public_key()]);
    // A realistic revocation set: 10k revoked sessions.
    for i in 0..10_000 {
        source.revoked.write().push(Revocation { session_id: 1_000_000 + i, expires_at_ms: i64::MAX / 2 });
    }
    let verifier = Verifier::new("https://social.example", "agora", source);
    rt.block_on(verifier.prime()).unwrap();
    let now = agora_kit::time::now_ms() / 1000;
    let token = key
        .sign(&Claims {
            iss: "https://social.example".into(),
            aud: "agora".into(),
            sub: Some("382735455309959168".into()),
            exp: now + 3600,
            iat: now,
            jti: "382735455318347776".into(),
            sid: "382735455309959169".into(),
            cid: "jsi2MP3L6CuCO-oQPEda5NPL2Eo4CDAL3Axq8Iiohis".into(),
            scope: "read write follow push".into(),
            role: Some("user".into()),
        })
        .unwrap();
    c.bench_function("verify, token seen before (cache hit + expiry + revocation lookup)", |b| {
        b.iter(|| verifier.verify_cached(black_box(&token)).unwrap())
    });
    // A fresh verifier per batch so every token is new to it: the full EdDSA path.
    c.bench_function("verify, first sight (EdDSA signature + claims + revocation lookup)", |b| {
        b.iter_batched(
            || {
                let v = Verifier::new("https://social.example", "agora", StaticKeys::new(vec![key.public_key()]));
                v.set_keys(&[key.public_key()]);
                v
            },
            |v| v.verify_cached(black_box(&token)).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("bearer header parse", |b| {
        let header = format!("Bearer {token}");
        b.iter(|| agora_kit::jwt::bearer(black_box(&header)).unwrap().len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
