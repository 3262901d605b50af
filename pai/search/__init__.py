"""Ticket searches: every method is a `TicketSearch` that finds a ticket (mask, start weights,
cost); prune-at-init scorers through an adapter, IMP as its own search."""
