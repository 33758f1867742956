"""The field loop: doctor, alerts, cron entries, status, verify and the last doctor report.

Nothing is imported here, so `sync-ci doctor` pays only for the modules it uses.
"""
