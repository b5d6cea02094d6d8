# toolgate decision core - the session's history (docs/sessions.md)
# toolgate keeps what a session did (input.verified.session: its tools with
# outcomes and windowed counts and sums, the data labels its allowed calls
# read, its egress) from its own decisions; the caller cannot assert it.
# Helpers for policy authors, and the information-flow rule: a tool that
# sends data out (registry `egress: true`) needs a human once the session has
# read data whose label is sensitive.
package toolgate

import rego.v1

# The session's summary, when the request belongs to one.
session := s if {
	s := input.verified.session
	is_object(s)
}

# An allowed call earlier in this session read data labelled `label`.
session_touched(label) if session.labels[label].count > 0

# Allowed calls of `tool` in this session (all of them, whatever max_events keeps).
session_calls(tool) := n if {
	n := session.tools[tool].allowed
	is_number(n)
} else := 0

# Allowed calls of `tool` within the last `seconds` (60, 3600 or 86400).
session_count(tool, seconds) := n if {
	n := session.tools[tool].in_window[format_int(seconds, 10)]
	is_number(n)
} else := 0

# The sum of the numeric argument `argument` over allowed calls of `tool` within the last `seconds`.
session_sum(tool, argument, seconds) := x if {
	x := session.tools[tool].sums[argument][format_int(seconds, 10)]
	is_number(x)
} else := 0

# A label the deployment treats as sensitive (data.toolgate.deployment.labels[l].sensitive).
sensitive_label(l) if data.toolgate.deployment.labels[l].sensitive == true

# The tool sends data out of the organisation (registry `egress: true`).
tool_egress if tool.egress == true

# Who may approve egress after reading `label`: the label's egress_approval rule, else the defaults.
egress_rule(label) := r if {
	r := data.toolgate.deployment.labels[label].egress_approval
	is_object(r)
} else := approval_defaults

# Information flow: egress after a sensitive read in the same session needs an approval.
approval_requirements contains object.union(requirement("egress_after_sensitive_read", egress_rule(label), msg), {"code": "egress_after_sensitive_read"}) if {
	tool_egress
	some label, seen in session.labels
	sensitive_label(label)
	seen.count > 0
	msg := egress_message(label, seen)
}

egress_message(label, seen) := concat("", [
	"tool '", tool_name, "' sends data out, and this session may have read '", label,
	"' data before toolgate had to forget it (session.max_sessions)",
]) if {
	seen.forgotten == true
} else := concat("", [
	"tool '", tool_name, "' sends data out, and this session read '", label, "' data earlier (",
	concat(", ", [t | some t in seen.tools; is_string(t)]), "; decision ", seen.last_decision_id, ")",
])

# Without a session toolgate cannot know what was read before: egress needs an approval.
approval_requirements contains object.union(requirement("egress_without_session", approval_defaults, msg), {"code": "egress_without_session"}) if {
	tool_egress
	not session
	msg := concat("", ["tool '", tool_name, "' sends data out and the request names no session (context.session.id): what was read before is unknown"])
}
