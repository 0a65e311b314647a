"""Who may do what, and how much: users in groups, API keys, rights per collection, budgets and rate limits,
usage and the audit log. The one check that applies rights lives in the service layer; this package stores
what it decides on and turns a request's credential into the caller."""
