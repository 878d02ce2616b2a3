"""paymesh auth service."""
