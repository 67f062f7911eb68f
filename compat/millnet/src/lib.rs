//! The ported suite lives in tests/ and examples/.
