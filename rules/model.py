"""The base of every rules.yaml model: frozen once read, and a setting it does not know is refused, not ignored."""

from pydantic import BaseModel, ConfigDict


class SettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
