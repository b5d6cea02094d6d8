# toolgate policy library - calendar helpers (business hours)
# Built on OPA's time.clock and time.weekday, which toolgate provides to the
# wasm module itself (src/policy/builtins.ts, same results as OPA's). Use the
# decision's own time, time_ns (input.verified.time_ns), e.g. in a rule of
# your own:
#
#   deny_reasons contains {"code": "outside_business_hours", "message": "..."} if {
#   	tool_name == "payments.refund"
#   	not within_hours(time_ns, "Europe/Berlin", "09:00", "17:30", weekdays)
#   }
#
# Anything malformed (a zone Go's time package does not know, a time that is
# not "HH:MM", days that are neither an array nor a set) leaves within_hours
# undefined, so `not within_hours(...)` holds: the rule above fails closed.
package toolgate

import rego.v1

weekdays := {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}

week := ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]

# Minutes since midnight of "HH:MM" (00:00 to 24:00; 24:00 ends a day).
minute_of_day(s) := m if {
	is_string(s)
	regex.match(`^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$`, s)
	parts := split(s, ":")
	m := (to_number(parts[0]) * 60) + to_number(parts[1])
}

# within_hours(ns, tz, from, to, days): whether the instant ns (nanoseconds
# since the epoch), read in time zone tz ("Europe/Berlin", "UTC", ...), falls on
# one of days (weekday names, an array or a set) between from (inclusive) and
# to (exclusive), both "HH:MM" wall-clock times in tz. A window with to before
# from runs past midnight ("22:00" to "06:00") and belongs to the day it starts
# on: Friday 22:00 to Saturday 06:00 is Friday's. from == to is an empty window.
within_hours(ns, tz, from, to, days) if {
	f := minute_of_day(from)
	t := minute_of_day(to)
	f < t
	in_window(ns, tz, f, t)
	time.weekday([ns, tz]) in set_of(days)
}

# overnight: the evening part, on the day the window starts
within_hours(ns, tz, from, to, days) if {
	f := minute_of_day(from)
	t := minute_of_day(to)
	f > t
	in_window(ns, tz, f, 1440)
	time.weekday([ns, tz]) in set_of(days)
}

# overnight: the morning part, when the window started the day before
within_hours(ns, tz, from, to, days) if {
	f := minute_of_day(from)
	t := minute_of_day(to)
	f > t
	in_window(ns, tz, 0, t)
	day_before(time.weekday([ns, tz])) in set_of(days)
}

in_window(ns, tz, f, t) if {
	[h, m, _] := time.clock([ns, tz])
	now := (h * 60) + m
	f <= now
	now < t
}

day_before(d) := week[(i + 6) % 7] if {
	some i, x in week
	x == d
}

set_of(days) := {d | some d in days} if is_array(days)

else := days if is_set(days)
