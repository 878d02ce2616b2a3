"""paymesh notify service."""
