"""Money in a person's words: an exact amount with the rules' currency (`currency: USD` in rules.yaml)."""

from __future__ import annotations

from decimal import Decimal

# The symbols people expect before the amount; any other ISO 4217 code is written after it ("1,250.00 CHF").
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "CA$", "AUD": "A$", "NZD": "NZ$", "INR": "₹",
           "CNY": "CN¥", "KRW": "₩", "BRL": "R$", "MXN": "MX$"}
NO_CENTS = frozenset({"JPY", "KRW"})  # shown in whole units, as people write them


def format_money(amount: Decimal | int, currency: str, cents: bool = True) -> str:
    """`format_money(Decimal('5000'), 'USD')` -> '$5,000.00'; with cents=False -> '$5,000' (whole amounts, as
    thresholds are written). A negative amount reads '-$12.50'."""
    value = Decimal(amount)
    places = 0 if currency in NO_CENTS or (not cents and value == value.to_integral_value()) else 2
    text = f"{abs(value):,.{places}f}"
    sign = "-" if value < 0 else ""
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency}"


def format_cents(cents: int, currency: str) -> str:
    """Stored integer cents as money: 1245000 -> '$12,450.00'."""
    return format_money(Decimal(cents) / 100, currency)
