"""The meter: RatecodeID and the money columns of a generated trip, from the TLC tariff in force that month."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from taxi_duration.zones import AIRPORT_ZONE_IDS, BOROUGH_CODES

CARD = 1
NO_TIP_SHARE = 0.1  # card trips without a tip
TIP_MIN, TIP_SPAN = 0.12, 0.16  # tip share of the fare, uniform in [min, min + span]
TOLL_SHARE = 0.35  # inter-borough trips crossing a tolled bridge or tunnel
RATE_STANDARD, RATE_JFK, RATE_NEWARK = 1, 2, 3
JFK_ZONE, NEWARK_ZONE = 132, 1
SLOW_MPH = 12.0  # below it the meter charges by time
OVERNIGHT_HOURS = (20, 6)  # [20:00, 06:00)
RUSH_HOURS = (16, 20)  # weekdays [16:00, 20:00)
MTA_TAX = 0.5


@dataclass(frozen=True)
class Tariff:
    """TLC yellow/green rates in force from a month on (money in USD)."""

    start: int  # year * 100 + month
    initial: float
    unit: float  # per 1/5 mile, or per minute below SLOW_MPH
    jfk_flat: float
    newark_surcharge: float
    overnight: float
    rush: float
    improvement: float
    congestion: float | None  # yellow; green pays GREEN_CONGESTION
    airport_fee: float | None
    toll: float


GREEN_CONGESTION = 2.75
TARIFFS = (
    Tariff(200901, 2.5, 0.5, 52.0, 17.5, 0.5, 1.0, 0.3, None, None, 5.76),
    Tariff(201902, 2.5, 0.5, 52.0, 17.5, 0.5, 1.0, 0.3, 2.5, None, 5.76),
    Tariff(202201, 2.5, 0.5, 52.0, 17.5, 0.5, 1.0, 0.3, 2.5, 1.25, 6.55),
    Tariff(202301, 3.0, 0.7, 70.0, 20.0, 1.0, 2.5, 1.0, 2.5, 1.75, 6.94),
)


def tariff_for(year: int, month: int) -> Tariff:
    """The rates in force in a month."""
    period = year * 100 + month
    return max((t for t in TARIFFS if t.start <= period), key=lambda t: t.start, default=TARIFFS[0])


def with_fares(trips: DataFrame, tariff: Tariff, service: str) -> DataFrame:
    """RatecodeID, payment type and the money columns from the meter formula of the tariff in force."""
    manhattan = BOROUGH_CODES["Manhattan"]
    pickup, dropoff = F.col("pickup"), F.col("dropoff")
    jfk = ((pickup == JFK_ZONE) & (F.col("dropoff_borough") == manhattan)) | (
        (dropoff == JFK_ZONE) & (F.col("pickup_borough") == manhattan)
    )
    newark = dropoff == NEWARK_ZONE
    slow_minutes = F.greatest(F.lit(0.0), F.col("natural_s") / 60.0 - F.col("miles") / SLOW_MPH * 60.0)
    meter = tariff.initial + tariff.unit * (F.ceil(F.col("miles") * 5) + F.floor(slow_minutes))
    fare = F.when(jfk, tariff.jfk_flat).when(newark, meter + tariff.newark_surcharge).otherwise(meter)
    overnight = (F.col("hour") >= OVERNIGHT_HOURS[0]) | (F.col("hour") < OVERNIGHT_HOURS[1])
    rush = (F.col("weekend") == 0) & (F.col("hour") >= RUSH_HOURS[0]) & (F.col("hour") < RUSH_HOURS[1])
    extra = F.when(jfk, 0.0).when(overnight, tariff.overnight).when(rush, tariff.rush).otherwise(0.0)
    u_tip = F.col("u_tip")
    tip_share = F.when(u_tip < NO_TIP_SHARE, 0.0).otherwise(
        TIP_MIN + TIP_SPAN * (u_tip - NO_TIP_SHARE) / (1 - NO_TIP_SHARE)
    )
    crosses = F.col("pickup_borough") != F.col("dropoff_borough")
    tolls = F.when(crosses & (F.col("u_toll") < TOLL_SHARE), tariff.toll).otherwise(0.0)
    touches_manhattan = (F.col("pickup_borough") == manhattan) | (F.col("dropoff_borough") == manhattan)
    congestion_rate = GREEN_CONGESTION if service == "green" else tariff.congestion
    no_value = F.lit(None).cast("double")
    congestion = (
        F.when(touches_manhattan, congestion_rate).otherwise(0.0) if tariff.congestion is not None else no_value
    )
    at_airport = pickup.isin(*(zone for zone in AIRPORT_ZONE_IDS if zone != NEWARK_ZONE))
    airport_fee = (
        F.when(at_airport, tariff.airport_fee).otherwise(0.0)
        if tariff.airport_fee is not None and service == "yellow"
        else no_value
    )
    money = trips.withColumns(
        {
            "RatecodeID": F.when(jfk, RATE_JFK).when(newark, RATE_NEWARK).otherwise(RATE_STANDARD),
            "fare_amount": F.round(fare, 2).cast("double"),
            "extra": extra.cast("double"),
            "mta_tax": F.lit(MTA_TAX),
            "tolls_amount": tolls.cast("double"),
            "improvement_surcharge": F.lit(tariff.improvement),
            "congestion_surcharge": congestion.cast("double"),
            "Airport_fee": airport_fee.cast("double"),
        }
    ).withColumn(
        "tip_amount",
        F.when(F.col("payment_type") == CARD, F.round(F.col("fare_amount") * tip_share, 2)).otherwise(0.0),
    )
    parts = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount", "improvement_surcharge")
    total = sum((F.col(name) for name in parts[1:]), F.col(parts[0]))
    total = total + F.coalesce(F.col("congestion_surcharge"), F.lit(0.0)) + F.coalesce(F.col("Airport_fee"), F.lit(0.0))
    return money.withColumn("total_amount", F.round(total, 2))
