# Tests for the calendar helpers (time.rego). opa test runs Go's builtins; the
# wasm host functions toolgate provides are checked against them in
# test/integration/builtins-parity.test.ts.
package toolgate.tests.time

import data.toolgate.minute_of_day
import data.toolgate.weekdays
import data.toolgate.within_hours
import rego.v1

fri_0859 := 1796374740000000000 # 2026-12-04T08:59:00Z, a Friday

fri_0900 := 1796374800000000000

fri_1659_59 := 1796403599000000000

fri_1700 := 1796403600000000000

fri_2230 := 1796423400000000000

sat_0559 := 1796450340000000000 # 2026-12-05T05:59:00Z

sat_0600 := 1796450400000000000

sat_1000 := 1796464800000000000

fri_0300 := 1796353200000000000 # Thursday 22:00 in New York

mon_0300 := 1796612400000000000 # 2026-12-07T03:00:00Z

berlin_dst_day := 1774769400000000000 # 2026-03-29T07:30:00Z, 09:30 CEST (Sunday, first day of DST)

test_minute_of_day if {
	minute_of_day("00:00") == 0
	minute_of_day("09:30") == 570
	minute_of_day("23:59") == 1439
	minute_of_day("24:00") == 1440
	not minute_of_day("24:01")
	not minute_of_day("9:00")
	not minute_of_day("09:60")
	not minute_of_day("25:00")
	not minute_of_day("0900")
	not minute_of_day(900)
}

test_day_window_edges if {
	not within_hours(fri_0859, "UTC", "09:00", "17:00", weekdays)
	within_hours(fri_0900, "UTC", "09:00", "17:00", weekdays)
	within_hours(fri_1659_59, "UTC", "09:00", "17:00", weekdays)
	not within_hours(fri_1700, "UTC", "09:00", "17:00", weekdays)
	within_hours(fri_1700, "UTC", "17:00", "24:00", weekdays)
}

test_days_as_array_or_set if {
	not within_hours(sat_1000, "UTC", "09:00", "17:00", weekdays)
	within_hours(sat_1000, "UTC", "09:00", "17:00", ["Saturday"])
	within_hours(sat_1000, "UTC", "09:00", "17:00", {"Saturday", "Sunday"})
	not within_hours(sat_1000, "UTC", "09:00", "17:00", [])
}

test_time_zone if {
	# 03:00 UTC on Friday is 22:00 on Thursday in New York
	within_hours(fri_0300, "America/New_York", "21:00", "23:00", {"Thursday"})
	not within_hours(fri_0300, "America/New_York", "21:00", "23:00", {"Friday"})
	not within_hours(fri_0300, "UTC", "21:00", "23:00", {"Thursday", "Friday"})
}

test_daylight_saving_time if {
	within_hours(berlin_dst_day, "Europe/Berlin", "09:00", "17:00", {"Sunday"})
	not within_hours(berlin_dst_day, "UTC", "09:00", "17:00", {"Sunday"})
}

test_overnight_window_belongs_to_the_day_it_starts if {
	within_hours(fri_2230, "UTC", "22:00", "06:00", {"Friday"})
	within_hours(sat_0559, "UTC", "22:00", "06:00", {"Friday"})
	not within_hours(sat_0600, "UTC", "22:00", "06:00", {"Friday"})
	not within_hours(sat_0559, "UTC", "22:00", "06:00", {"Saturday"})
	not within_hours(fri_1700, "UTC", "22:00", "06:00", {"Friday"})

	# Monday morning belongs to Sunday's window (the week wraps)
	within_hours(mon_0300, "UTC", "22:00", "06:00", {"Sunday"})
	not within_hours(mon_0300, "UTC", "22:00", "06:00", weekdays)
}

test_empty_window if {
	not within_hours(fri_0900, "UTC", "09:00", "09:00", weekdays)
}

test_malformed_arguments_fail_closed if {
	not within_hours(fri_0900, "Mars/Olympus", "09:00", "17:00", weekdays)
	not within_hours(fri_0900, "UTC", "9:00", "17:00", weekdays)
	not within_hours(fri_0900, "UTC", "09:00", "25:00", weekdays)
	not within_hours(fri_0900, "UTC", "09:00", "17:00", "Friday")

	# wrong literal types fail opa check; values of unknown type (e.g. from
	# input) fail at evaluation, closed
	now := json.unmarshal(`"now"`)
	not within_hours(now, "UTC", "09:00", "17:00", weekdays)
	one := json.unmarshal("1")
	not within_hours(fri_0900, one, "09:00", "17:00", weekdays)
}
