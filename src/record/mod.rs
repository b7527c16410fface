//! Signed status records: the text hookops appends to a deployed commit's git note, the SSHSIG
//! signature over a record's JSON line, and verification against an ssh-keygen
//! `allowed_signers` file.
//!
//! Everything here is pure (no git, no clock, no environment) so it can be unit-tested and
//! fuzzed; `notes` does the git side effects. The format is a public interface (see
//! docs/records.md) and stock `ssh-keygen -Y verify` must accept what `Signer::sign` produces,
//! so the byte layout below is deliberate:
//!
//! ```text
//! hookops-record v1
//! {"env":"prod",...}                      <- the signed message, without its newline
//! -----BEGIN SSH SIGNATURE-----           <- optional
//! ...
//! -----END SSH SIGNATURE-----
//! ```
//!
//! Records in one note are separated by one blank line.

pub mod allowed_signers;
pub mod history;
pub mod note;
pub mod notes;
pub mod payload;
pub mod signature;

pub use allowed_signers::{verify, AllowedSigners, Verdict};
pub use note::{encode, parse_note, record_time, ParseError, ParsedRecord, HEADER};
pub use signature::{Signer, NAMESPACE};

#[cfg(test)]
mod tests {
    use super::allowed_signers::{match_pattern, match_pattern_list, parse_ssh_time};
    use super::note::{SIG_BEGIN, SIG_END};
    use super::*;
    use proptest::prelude::*;
    use ssh_key::private::Ed25519Keypair;
    use ssh_key::private::KeypairData;
    use ssh_key::{HashAlg, LineEnding, PrivateKey};

    fn key(seed: u8) -> Signer {
        let pair = Ed25519Keypair::from_seed(&[seed; 32]);
        let key = PrivateKey::new(KeypairData::Ed25519(pair), "test").expect("test key");
        Signer::from_key(key).expect("signer")
    }

    fn publine(s: &Signer) -> String {
        s.public_key().to_openssh().expect("openssh public key")
    }

    fn payload(finished_at: &str) -> String {
        format!(
            r#"{{"env":"prod","action":"deploy","result":"succeeded","commit":"abc","started_at":"2025-05-31T23:59:00Z","finished_at":"{finished_at}","targets":[]}}"#
        )
    }

    fn signed(s: &Signer, payload: &str) -> ParsedRecord {
        let sig = s.sign(payload).expect("sign");
        let note = encode(payload, Some(&sig));
        let mut recs = parse_note(&note).expect("parse");
        assert_eq!(recs.len(), 1);
        recs.remove(0)
    }

    fn signers(text: &str) -> AllowedSigners {
        AllowedSigners::parse(text, "test").expect("allowed signers")
    }

    #[test]
    fn sign_verify_roundtrip() {
        let a = key(1);
        assert!(a.id().starts_with("SHA256:"));
        let rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        let allowed = signers(&format!("ops@example.com {}\n", publine(&a)));
        assert_eq!(
            verify(&rec, &allowed),
            Verdict::Good {
                principal: "ops@example.com".into()
            }
        );
    }

    #[test]
    fn encode_layout_is_byte_exact() {
        let a = key(1);
        let p = payload("2025-06-01T00:00:00Z");
        let sig = a.sign(&p).expect("sign");
        assert!(sig.starts_with(SIG_BEGIN) && sig.ends_with(SIG_END));
        let text = encode(&p, Some(&format!("{sig}\n")));
        assert_eq!(text, format!("{HEADER}\n{p}\n{sig}"));
        assert_eq!(encode(&p, None), format!("{HEADER}\n{p}"));
        assert!(a.sign("two\nlines").is_err());
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let a = key(1);
        let mut rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        rec.payload = rec.payload.replace("succeeded", "failed");
        let allowed = signers(&format!("ops@example.com {}", publine(&a)));
        assert_eq!(verify(&rec, &allowed), Verdict::BadSignature);
    }

    #[test]
    fn malformed_signature_is_bad_signature() {
        let a = key(1);
        let mut rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        rec.signature = Some(format!("{SIG_BEGIN}\nAAAA\n{SIG_END}"));
        let allowed = signers(&format!("ops@example.com {}", publine(&a)));
        assert_eq!(verify(&rec, &allowed), Verdict::BadSignature);
    }

    #[test]
    fn other_namespace_signature_is_bad() {
        let a = key(1);
        let p = payload("2025-06-01T00:00:00Z");
        let sig = a
            .key
            .sign("git", HashAlg::Sha512, p.as_bytes())
            .expect("sign")
            .to_pem(LineEnding::LF)
            .expect("pem");
        let rec = ParsedRecord {
            payload: p,
            signature: Some(sig),
            line: 1,
        };
        let allowed = signers(&format!("ops@example.com {}", publine(&a)));
        assert_eq!(verify(&rec, &allowed), Verdict::BadSignature);
    }

    #[test]
    fn unknown_key_and_unsigned() {
        let (a, b) = (key(1), key(2));
        let rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        let allowed = signers(&format!("ops@example.com {}", publine(&b)));
        assert_eq!(
            verify(&rec, &allowed),
            Verdict::UnknownKey {
                fingerprint: a.id()
            }
        );
        let unsigned = ParsedRecord {
            signature: None,
            ..rec
        };
        assert_eq!(verify(&unsigned, &allowed), Verdict::Unsigned);
    }

    #[test]
    fn namespaces_option_must_match_hookops() {
        let a = key(1);
        let rec = signed(&a, &payload("2025-06-01T00:00:00Z"));
        let only_git = signers(&format!("ops@x namespaces=\"git,file\" {}", publine(&a)));
        assert_eq!(
            verify(&rec, &only_git),
            Verdict::UnknownKey {
                fingerprint: a.id()
            }
        );
        let pattern = signers(&format!("ops@x namespaces=\"git,hook*\" {}", publine(&a)));
        assert!(matches!(verify(&rec, &pattern), Verdict::Good { .. }));
        let negated = signers(&format!("ops@x namespaces=\"*,!hookops\" {}", publine(&a)));
        assert!(matches!(verify(&rec, &negated), Verdict::UnknownKey { .. }));
    }

    #[test]
    fn validity_windows_use_record_time() {
        let (a, b) = (key(1), key(2));
        let allowed = signers(&format!(
            "# rotation\nops@x valid-before=\"20260101\" {}\nops@x valid-after=\"20260101\",namespaces=\"hookops\" {}\n",
            publine(&a),
            publine(&b)
        ));
        let good = Verdict::Good {
            principal: "ops@x".into(),
        };
        let expired = Verdict::Expired {
            principal: "ops@x".into(),
        };
        assert_eq!(
            verify(&signed(&a, &payload("2025-12-31T23:59:59Z")), &allowed),
            good
        );
        assert_eq!(
            verify(&signed(&a, &payload("2026-06-01T00:00:00Z")), &allowed),
            expired
        );
        assert_eq!(
            verify(&signed(&b, &payload("2026-06-01T00:00:00Z")), &allowed),
            good
        );
        assert_eq!(
            verify(&signed(&b, &payload("2025-06-01T00:00:00Z")), &allowed),
            expired
        );
        // Offsets are honoured: 2026-01-01T00:30+01:00 is still 2025 in UTC.
        assert_eq!(
            verify(&signed(&a, &payload("2026-01-01T00:30:00+01:00")), &allowed),
            good
        );
        // Boundaries are inclusive, like ssh-keygen.
        assert_eq!(
            verify(&signed(&a, &payload("2026-01-01T00:00:00Z")), &allowed),
            good
        );
        // No usable finished_at: fall back to started_at (2025-05-31).
        assert_eq!(verify(&signed(&a, &payload("soon")), &allowed), good);
        // No timestamp at all: a windowed key cannot be checked.
        assert_eq!(verify(&signed(&a, r#"{"env":"prod"}"#), &allowed), expired);
    }

    #[test]
    fn rotated_key_listed_twice_any_window_wins() {
        let a = key(1);
        let allowed = signers(&format!(
            "ops@x valid-before=\"20250101\" {k}\nops@x valid-after=\"202506010000\",valid-before=\"20250701000000Z\" {k}\n",
            k = publine(&a)
        ));
        assert!(matches!(
            verify(&signed(&a, &payload("2025-06-15T00:00:00Z")), &allowed),
            Verdict::Good { .. }
        ));
        assert!(matches!(
            verify(&signed(&a, &payload("2025-03-01T00:00:00Z")), &allowed),
            Verdict::Expired { .. }
        ));
    }

    #[test]
    fn multiple_records_in_one_note() {
        let a = key(1);
        let p1 = payload("2025-06-01T00:00:00Z");
        let p2 = payload("2025-06-02T00:00:00Z");
        let note = format!(
            "{}\n\n{}\n\n{}\n",
            encode(&p1, Some(&a.sign(&p1).expect("sign"))),
            encode(&p2, None),
            encode(&p2, Some(&a.sign(&p2).expect("sign")))
        );
        let recs = parse_note(&note).expect("parse");
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].line, 1);
        assert!(recs[0].signature.is_some());
        assert_eq!(recs[1].payload, p2);
        assert_eq!(recs[1].signature, None);
        assert_eq!(
            recs[1].line,
            recs[0]
                .signature
                .as_deref()
                .map_or(0, |s| s.lines().count())
                + 4
        );
        assert_eq!(recs[2].encode(), encode(&p2, recs[2].signature.as_deref()));
        assert_eq!(parse_note("").expect("empty"), vec![]);
        assert_eq!(parse_note("\n\n").expect("blank"), vec![]);
    }

    #[test]
    fn garbage_notes_error_with_line_numbers() {
        let p = payload("2025-06-01T00:00:00Z");
        let cases: Vec<(String, usize)> = vec![
            ("deployed by hand".into(), 1),
            (format!("{HEADER}\n{p}\n\nrandom text"), 4),
            (HEADER.to_string(), 1),
            (format!("{HEADER}\nnot json"), 2),
            (format!("{HEADER}\n[1,2]"), 2),
            (format!("{HEADER}\n{p}\ntrailing junk"), 3),
            (format!("{HEADER}\n{p}\n{SIG_BEGIN}\nAAAA"), 3),
            (format!("{HEADER}\n{p}\n{SIG_BEGIN}\nAA AA\n{SIG_END}"), 4),
            (format!("{HEADER}\n{p}\n{SIG_BEGIN}\n\n{SIG_END}"), 4),
            (format!("{HEADER}\r\n{p}\r\n"), 1),
            (format!("{HEADER}\n{p}\r\n"), 2),
        ];
        for (note, line) in cases {
            let err = parse_note(&note).expect_err(&note);
            assert_eq!(err.line, line, "{note:?}: {err}");
            assert!(err.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn allowed_signers_syntax() {
        let a = key(1);
        let k = publine(&a);
        let ok = signers(&format!(
            "\n# comment\n  ops@x,ci@* {k} a comment here\r\n\
             ci@x cert-authority {k}\n\
             ci@x NAMESPACES=\"hookops\",Valid-After=\"20250101UTC\" {k}\n"
        ));
        assert_eq!(ok.len(), 2, "cert-authority line skipped");
        assert_eq!(ok.entries[0].principals, "ops@x,ci@*");
        // The quoted principals form.
        let quoted = signers(&format!("\"ops team@x,ci@x\" {k}"));
        assert_eq!(quoted.entries[0].principals, "ops team@x,ci@x");

        for (text, needle) in [
            ("ops@x".to_string(), "missing public key"),
            (format!("ops@x bogus=\"1\" {k}"), "unsupported option"),
            (format!("ops@x valid-after=20250101 {k}"), "double-quoted"),
            (format!("ops@x valid-after=\"2025\" {k}"), "invalid time"),
            (
                format!("ops@x valid-after=\"20251301\" {k}"),
                "invalid time",
            ),
            (
                format!("ops@x valid-after=\"20260101\",valid-before=\"20250101\" {k}"),
                "not after",
            ),
            (
                format!("ops@x namespaces=\"a\",namespaces=\"b\" {k}"),
                "multiple",
            ),
            (
                "ops@x ssh-ed25519 AAAAnotakey".to_string(),
                "invalid public key",
            ),
            (format!("ops@x namespaces=\"a {k}"), "unterminated"),
            (format!("\"ops@x {k}"), "unterminated"),
        ] {
            let err = AllowedSigners::parse(&format!("# c\n{text}\n"), "signers.txt")
                .expect_err(&text)
                .to_string();
            assert!(err.starts_with("signers.txt:2: "), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn ssh_times() {
        let t = |s| parse_ssh_time(s).map(|d| d.to_rfc3339());
        assert_eq!(t("20260101"), Ok("2026-01-01T00:00:00+00:00".into()));
        assert_eq!(t("202601011230Z"), Ok("2026-01-01T12:30:00+00:00".into()));
        assert_eq!(t("20260101123045"), Ok("2026-01-01T12:30:45+00:00".into()));
        for bad in [
            "",
            "Z",
            "2026010",
            "2026-01-01",
            "20260230",
            "20260101250000",
            "２０２６０１０１",
        ] {
            assert!(parse_ssh_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns() {
        assert!(match_pattern("hookops", "hook*"));
        assert!(match_pattern("hookops", "h?okops"));
        assert!(match_pattern("hookops", "*"));
        assert!(match_pattern("hookops", "*o*s"));
        assert!(!match_pattern("hookops", "hook"));
        assert!(!match_pattern("hookops", "*x*"));
        assert_eq!(match_pattern_list("hookops", "git,file"), None);
        assert_eq!(match_pattern_list("hookops", "git,hookops"), Some(true));
        assert_eq!(match_pattern_list("hookops", "*,!hook*"), Some(false));
    }

    #[test]
    fn signer_load_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_hookops");
        let err = Signer::load(&path).expect_err("missing").to_string();
        assert!(err.contains("id_hookops"), "{err}");
        let a = key(3);
        std::fs::write(&path, publine(&a)).expect("write");
        let err = Signer::load(&path).expect_err("public").to_string();
        assert!(
            err.contains("id_hookops") && err.contains("public key"),
            "{err}"
        );
        let private = a.key.to_openssh(LineEnding::LF).expect("openssh");
        std::fs::write(&path, private.as_bytes()).expect("write");
        let loaded = Signer::load(&path).expect("load");
        assert_eq!(loaded.id(), a.id());
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    /// Inputs built from the format's own tokens reach far deeper than random bytes.
    fn note_like() -> impl Strategy<Value = String> {
        let a = key(7);
        let p = payload("2025-06-01T00:00:00Z");
        let sig = a.sign(&p).expect("sign");
        let tokens: Vec<String> = vec![
            HEADER.into(),
            p,
            sig,
            SIG_BEGIN.into(),
            SIG_END.into(),
            "\n".into(),
            "\r\n".into(),
            "{}".into(),
            "AAAA".into(),
            "é".into(),
        ];
        proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(tokens),
                any::<String>(),
                "[\n{}\"a-zA-Z0-9+/= ]{0,20}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    fn signers_like() -> impl Strategy<Value = String> {
        let k = publine(&key(7));
        let tokens: Vec<String> = vec![
            k.clone(),
            k[..20].to_string(),
            "ops@x ".into(),
            "\"ops x\" ".into(),
            "namespaces=\"hook*,!git\" ".into(),
            "valid-after=\"20250101Z\",".into(),
            "valid-before=\"2025\" ".into(),
            "cert-authority ".into(),
            "\"".into(),
            ",".into(),
            "\n".into(),
            "#".into(),
            "\t".into(),
        ];
        proptest::collection::vec(
            prop_oneof![proptest::sample::select(tokens), any::<String>()],
            0..10,
        )
        .prop_map(|parts| parts.concat())
    }

    /// The record format under a time budget (`scripts/fuzz.sh`): what parses re-encodes to
    /// text that parses to as many records, and verifying any of them never panics.
    #[test]
    fn fuzz_record_format() {
        let allowed = signers(&publine(&key(7)).replace("ssh-", "ops@x ssh-"));
        crate::fuzz::run("record format", note_like(), |s| {
            if let Ok(recs) = parse_note(s) {
                let again: Vec<String> = recs.iter().map(ParsedRecord::encode).collect();
                let reparsed = parse_note(&again.join("\n\n")).map(|r| r.len());
                assert_eq!(reparsed.ok(), Some(recs.len()));
                for r in &recs {
                    let _ = verify(r, &allowed);
                }
            }
        });
    }

    proptest! {
        #[test]
        fn parse_note_never_panics(s in any::<String>()) {
            let _ = parse_note(&s);
        }

        #[test]
        fn parse_note_structured_never_panics(s in note_like()) {
            if let Ok(recs) = parse_note(&s) {
                // Whatever parses re-encodes to something that parses the same way.
                let again: Vec<String> = recs.iter().map(ParsedRecord::encode).collect();
                let reparsed = parse_note(&again.join("\n\n")).map(|r| r.len());
                prop_assert_eq!(reparsed, Ok(recs.len()));
                let allowed = signers(&publine(&key(7)).replace("ssh-", "ops@x ssh-"));
                for r in &recs {
                    let _ = verify(r, &allowed);
                }
            }
        }

        #[test]
        fn allowed_signers_never_panics(s in any::<String>()) {
            let _ = AllowedSigners::parse(&s, "fuzz");
        }

        #[test]
        fn allowed_signers_structured_never_panics(s in signers_like()) {
            let _ = AllowedSigners::parse(&s, "fuzz");
        }
    }
}
