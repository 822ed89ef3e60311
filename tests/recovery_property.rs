//! Property: however N jobs' requests for recovery interleave, the number of
//! recoveries started equals the number of distinct expiry episodes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

use common::scripted::portal;
use formwright::book::Recorder;
use formwright::engine::alerts::{AlertConfig, Alerts};
use formwright::engine::session::{Health, MasterSession, Recovered, SessionConfig};
use formwright::journal::{Event, JobId, SessionEvent, Trigger};

/// One episode: the portal logs the master out, then jobs notice it after
/// their own delays (ms). Some notice long after the recovery ended, or
/// after the next episode began.
fn episodes() -> impl Strategy<Value = Vec<Vec<u64>>> {
    prop::collection::vec(prop::collection::vec(0u64..80, 1..7), 1..5)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn one_recovery_per_expiry_episode(episodes in episodes(), gap in 0u64..40) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let (started, ran) = runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let (recorder, _) = Recorder::open(dir.path()).unwrap();
            let recorder = Arc::new(recorder);
            let portal = portal();
            *portal.login_delay.lock().unwrap() = Duration::from_millis(25);
            let session = Arc::new(MasterSession::new(
                Arc::new(portal.clone()),
                Arc::clone(&recorder),
                Alerts::new(AlertConfig::default()),
                SessionConfig::default(),
                CancellationToken::new(),
            ));
            session.start().await;

            let mut askers = tokio::task::JoinSet::new();
            let mut health = session.subscribe();
            let mut generation = session.wait_ready().await.unwrap();
            for (e, delays) in episodes.iter().enumerate() {
                // A new episode: the portal logs out the master of the
                // current generation (the previous episode has healed).
                portal.expire();
                for (j, delay) in delays.iter().enumerate() {
                    let session = Arc::clone(&session);
                    let delay = Duration::from_millis(*delay);
                    let job = JobId(format!("E{e}-J{j}"));
                    askers.spawn(async move {
                        tokio::time::sleep(delay).await;
                        session.recover(generation, Trigger::Job(job)).await
                    });
                }
                let previous = generation;
                let healed = health
                    .wait_for(|h| matches!(h, Health::Up(g) if *g > previous))
                    .await
                    .map(|h| *h)
                    .unwrap();
                if let Health::Up(g) = healed {
                    generation = g;
                }
                // Stragglers of this episode may still be asking.
                tokio::time::sleep(Duration::from_millis(gap)).await;
            }
            let mut ran = 0;
            while let Some(outcome) = askers.join_next().await {
                if outcome.unwrap() == Recovered::Ran {
                    ran += 1;
                }
            }
            let started = recorder
                .journal()
                .iter()
                .filter(|r| matches!(
                    r.as_ref().unwrap().event,
                    Event::Session(SessionEvent::Expired { .. })
                ))
                .count();
            (started, ran)
        });
        prop_assert_eq!(started, episodes.len());
        prop_assert_eq!(ran, episodes.len());
    }
}
