"""paymesh wallet service."""
