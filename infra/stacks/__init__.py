"""One Stack per deployable component; cross-unit wiring (grants, outputs) lives here."""
