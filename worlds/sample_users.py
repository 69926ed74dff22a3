"""Sample-world users: demographics, a sparse topic taste, hidden cluster loyalties and type habits."""
import datetime
from dataclasses import dataclass

import numpy as np
import polars as pl

from worlds.sample_catalog import CLUSTERS, ITEM_TYPES
from worlds.sample_vocab import AGE_BUCKETS, COUNTRIES, LANGUAGES, PLANS

TASTE_CONCENTRATION = 2.0  # Dirichlet total mass: small, so each user cares about a few topics
CONVERTER_SHARE = 0.25  # of cold users, who try their first audiobooks in the holdout days
LATE_SIGNUP_SHARE = 0.1


@dataclass(frozen=True, eq=False)
class Population:
    users: pl.DataFrame  # user_id, country, age_bucket, signup_date, plan
    user_id: pl.Series  # (U,) String
    country: pl.Series  # (U,) String
    language: np.ndarray  # (U,) int8 index into LANGUAGES, from the country
    activity: np.ndarray  # (U,) float64, mean 1, heavy-tailed
    taste_cdf: np.ndarray  # (U, T) float32, cumulative topic taste
    taste: np.ndarray  # (U, T) float32
    cluster_pref: np.ndarray  # (U, T) int8, the cluster a user sticks to within each topic
    type_weight: np.ndarray  # (U, types) float64, relative use of each type
    audiobook_from: np.ndarray  # (U,) int32 first day index with audiobooks allowed
    converted_weight: np.ndarray  # (U,) float64, audiobook weight from audiobook_from on
    signup_day: np.ndarray  # (U,) int32 day index of signup (negative: before the simulation)


def build_population(
    users: int, topics: int, topic_share: np.ndarray, start: datetime.date, days: int,
    holdout_start: int, cold_share: float, rng: np.random.Generator,
) -> Population:
    """Draw users; cold users get audiobooks only from their conversion day, if ever."""
    country_share = np.array([s for *_, s in COUNTRIES])
    country = rng.choice(len(COUNTRIES), size=users, p=country_share / country_share.sum())
    lang_index = {lang: i for i, (lang, _) in enumerate(LANGUAGES)}
    language = np.array([lang_index[lang] for _, lang, _ in COUNTRIES], dtype=np.int8)[country]
    activity = np.clip(rng.lognormal(0.0, 0.9, size=users), 0.1, 25.0)
    activity /= activity.mean()
    taste = rng.gamma(TASTE_CONCENTRATION * topic_share, size=(users, topics)) + 1e-9
    taste = (taste / taste.sum(axis=1, keepdims=True)).astype(np.float32)
    type_weight = rng.gamma(2.0, size=(users, len(ITEM_TYPES))) * np.array([1.2, 0.7, 0.5])
    cold = rng.random(users) < cold_share
    converter = cold & (rng.random(users) < CONVERTER_SHARE)
    audiobook_from = np.where(cold, np.iinfo(np.int32).max, np.iinfo(np.int32).min).astype(np.int32)
    # conversions spread over the first three quarters of the window, so the last days still see new ones
    convert_window = max(1, (days - holdout_start) * 3 // 4)
    audiobook_from[converter] = holdout_start + rng.integers(0, convert_window, size=converter.sum())
    # once converted, half of a converter's listening is audiobooks: their holdout must carry targets
    converted_weight = np.where(converter, type_weight[:, 0] + type_weight[:, 1], type_weight[:, 2])
    late = rng.random(users) < LATE_SIGNUP_SHARE
    signup_day = -rng.integers(1, 1500, size=users)
    signup_day[late] = rng.integers(0, max(1, holdout_start), size=late.sum())
    user_id = "usr_" + pl.Series(np.arange(1, users + 1)).cast(pl.String).str.zfill(7)
    country_code = pl.Series([c for c, *_ in COUNTRIES]).gather(country)
    frame = pl.DataFrame({
        "user_id": user_id,
        "country": country_code,
        "age_bucket": _categorical(AGE_BUCKETS, users, rng),
        "signup_date": np.datetime64(start, "D") + signup_day,
        "plan": _categorical(PLANS, users, rng),
    })
    return Population(
        users=frame,
        user_id=user_id,
        country=country_code,
        language=language,
        activity=activity,
        taste_cdf=np.cumsum(taste, axis=1),
        taste=taste,
        cluster_pref=rng.integers(0, CLUSTERS, size=(users, topics)).astype(np.int8),
        type_weight=type_weight,
        audiobook_from=audiobook_from,
        converted_weight=converted_weight,
        signup_day=signup_day.astype(np.int32),
    )


def _categorical(values: tuple[tuple[str, float], ...], n: int, rng: np.random.Generator) -> pl.Series:
    share = np.array([s for _, s in values])
    return pl.Series([v for v, _ in values]).gather(rng.choice(len(values), size=n, p=share / share.sum()))
