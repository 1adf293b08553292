"""Faithful local fakes of services that cannot run here (Salesforce)."""
