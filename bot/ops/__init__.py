"""Operations: Prometheus metrics, health, and what several replicas coordinate through Postgres."""
