"""devnet package."""
