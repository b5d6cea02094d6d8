# toolgate decision core - deny reasons
# Every rule below adds one deny reason {code, message}. Any deny reason makes
# the outcome deny. The checks read only data.toolgate.deployment, the
# verified part of the input, and the request's tool, arguments, resource
# and job; never caller-asserted subject properties.
# Each rule body starts with the condition that is cheapest to find false on
# an allowed request, and builds its message only when it fires.
package toolgate

import rego.v1

num(x) := json.marshal(x)

# --- request shape -------------------------------------------------------------

deny_reasons contains {"code": "unknown_tool", "message": "request names no tool: action.name must be a non-empty string"} if {
	not tool_name
}

deny_reasons contains {"code": "unknown_tool", "message": concat("", ["tool '", tool_name, "' is not in the tool registry"])} if {
	not tool
	tool_name
}

deny_reasons contains {"code": "unknown_tool", "message": concat("", ["tool '", tool_name, "' has no valid permission class in the tool registry"])} if {
	not tool_class
	tool
}

deny_reasons contains {"code": "missing_job", "message": "context.job with non-empty string id (no surrounding white space), purpose and customer_id is required"} if {
	not job
}

# --- agent ---------------------------------------------------------------------

deny_reasons contains {"code": "unknown_agent", "message": "the sidecar's agent is not known to this deployment"} if {
	not agent
}

deny_reasons contains {"code": "agent_disabled", "message": concat("", ["agent '", agent_id, "' is disabled"])} if {
	not agent.enabled == true
	agent
}

# --- subject -------------------------------------------------------------------

deny_reasons contains {"code": "unknown_subject", "message": "the verified subject is not a known user of this deployment"} if {
	not user
}

# The caller may name the subject, but it must be the verified one.
deny_reasons contains {"code": "subject_mismatch", "message": "request.subject.id differs from the verified subject"} if {
	rid := input.request.subject.id
	rid != subject_id
	rid != null
}

deny_reasons contains {"code": "role_not_permitted", "message": msg} if {
	tool
	user
	not roles_permit(tool_name)
	msg := concat("", [
		"subject '", subject_id, "' (roles: ", concat(", ", sort(user_roles)), ") may not request '", tool_name, "'",
	])
}

# user is the data entry here (or, with "both", the claims' roles again)
roles_permit(name) if {
	roles_from != "claims"
	rs := user.roles
	is_array(rs)
	some role in rs
	role_permits(role, name)
}

roles_permit(name) if {
	roles_from != "data"
	some role in claim_roles
	role_permits(role, name)
}

role_permits(role, name) if {
	is_string(role)
	ts := data.toolgate.deployment.roles[role].tools
	is_array(ts)
	name in ts
}

# --- grants and purposes -----------------------------------------------------------

excluded_for_purpose if excluded(job.purpose, tool_name)

excluded(p, name) if {
	ts := data.toolgate.deployment.purposes[p].excluded_tools
	is_array(ts)
	name in ts
}

has_purpose(a, p) if {
	gs := a.grants
	is_array(gs)
	some g in gs
	g.purpose == p
}

granted_for(a, p, name) if {
	gs := a.grants
	is_array(gs)
	some g in gs
	g.purpose == p
	ts := g.tools
	is_array(ts)
	name in ts
}

granted_any(a, name) if {
	gs := a.grants
	is_array(gs)
	some g in gs
	ts := g.tools
	is_array(ts)
	name in ts
}

deny_reasons contains {"code": "purpose_not_permitted", "message": concat("", ["tool '", tool_name, "' is never part of a '", job.purpose, "' job"])} if {
	tool
	excluded(job.purpose, tool_name)
}

deny_reasons contains {"code": "purpose_not_permitted", "message": concat("", ["agent '", agent_id, "' holds no grant for job purpose '", job.purpose, "'"])} if {
	agent
	job
	not has_purpose(agent, job.purpose)
}

deny_reasons contains {"code": "purpose_not_permitted", "message": concat("", ["tool '", tool_name, "' is not granted for job purpose '", job.purpose, "'"])} if {
	tool
	agent
	job
	not granted_for(agent, job.purpose, tool_name)
	has_purpose(agent, job.purpose)
	granted_any(agent, tool_name)
	not excluded_for_purpose
}

deny_reasons contains {"code": "not_granted", "message": concat("", ["tool '", tool_name, "' is not granted to agent '", agent_id, "'"])} if {
	tool
	agent
	not granted_any(agent, tool_name)
	not excluded_for_purpose
}

# --- rollout stage -------------------------------------------------------------

deny_reasons contains {"code": "tool_disabled", "message": concat("", ["tool '", tool_name, "' is disabled"])} if {
	tool_stage == "disabled"
}

deny_reasons contains {"code": "shadow_mode", "message": concat("", ["tool '", tool_name, "' is in shadow stage: the decision the next stage would make is recorded, the call is not made"])} if {
	tool_stage == "shadow"
}

deny_reasons contains {"code": "stage_draft_only", "message": concat("", ["tool '", tool_name, "' is in draft_only stage: the agent may draft, not act"])} if {
	tool_stage == "draft_only"
	acting_class(tool_class)
}

deny_reasons contains {"code": "tool_disabled", "message": concat("", ["tool '", tool_name, "' has no valid rollout stage"])} if {
	not tool_stage
	tool
}

acting_class("approve")

acting_class("execute")

acting_class("admin")

# --- data boundary -------------------------------------------------------------

boundary := b if {
	b := tool_rule.data_boundary
	is_string(b)
} else := b if {
	b := data.toolgate.deployment.data_boundary["default"]
	is_string(b)
} else := "job_customer"

customer_resource_types(_) := ts if {
	ts := data.toolgate.deployment.data_boundary.customer_resource_types
	is_array(ts)
} else := ["customer"]

# Which customer the resource belongs to (caller-described resource).
resource_customer(_) := id if {
	t := input.request.resource.type
	is_string(t)
	t in customer_resource_types(0)
	id := input.request.resource.id
} else := input.request.resource.properties.customer_id

# c is the job's customer_id, a non-empty string.
in_scope(c) if resource_customer(0) == c

# Any value other than "none" is treated as "job_customer" (fail closed).
deny_reasons contains {"code": "out_of_scope", "message": concat("", ["resource does not belong to the job's customer '", job.customer_id, "'"])} if {
	job
	not in_scope(job.customer_id)
	boundary != "none"
}

# --- arguments -----------------------------------------------------------------

deny_reasons contains {"code": "invalid_arguments", "message": "action.properties.arguments must be an object"} if {
	a := input.request.action.properties.arguments
	not is_object(a)
}

deny_reasons contains {"code": "invalid_arguments", "message": concat("", ["argument '", name, "' is required"])} if {
	schema := tool_rule.arguments
	is_object(schema)
	some name, spec in schema
	spec.required == true
	not has_key(args, name)
}

deny_reasons contains {"code": "invalid_arguments", "message": concat("", ["argument '", name, "' must be of type ", spec.type])} if {
	schema := tool_rule.arguments
	is_object(schema)
	some name, spec in schema
	is_string(spec.type)
	not type_ok(spec.type, args[name])
}

deny_reasons contains {"code": "invalid_arguments", "message": concat("", ["argument '", name, "' must be at least ", num(spec.minimum)])} if {
	schema := tool_rule.arguments
	is_object(schema)
	some name, spec in schema
	is_number(spec.minimum)
	v := args[name]
	is_number(v)
	v < spec.minimum
}

# Written as a rule so that `not number_argument(x)` is true for absent arguments.
number_argument(name) if is_number(args[name])

type_ok("number", v) if is_number(v)

type_ok("string", v) if is_string(v)

type_ok("boolean", v) if is_boolean(v)

type_ok("object", v) if is_object(v)

type_ok("array", v) if is_array(v)

# --- limits (thresholds beyond which the tool is never allowed) ----------------------

deny_reasons contains {"code": "invalid_arguments", "message": concat("", ["argument '", a, "' must be a number"])} if {
	ls := tool_rule.limits
	is_array(ls)
	some l in ls
	a := l.argument
	is_string(a)
	not number_argument(a)
}

deny_reasons contains {"code": "limit_exceeded", "message": concat("", ["argument '", a, "' exceeds the limit of ", num(l.max)])} if {
	ls := tool_rule.limits
	is_array(ls)
	some l in ls
	a := l.argument
	is_string(a)
	is_number(l.max)
	v := args[a]
	is_number(v)
	v > l.max
}

deny_reasons contains {"code": "limit_exceeded", "message": concat("", ["argument '", a, "' is below the minimum of ", num(l.min)])} if {
	ls := tool_rule.limits
	is_array(ls)
	some l in ls
	a := l.argument
	is_string(a)
	is_number(l.min)
	v := args[a]
	is_number(v)
	v < l.min
}
