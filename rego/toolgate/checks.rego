# toolgate decision core - deny reasons
# Every rule below adds one deny reason {code, message}. Any deny reason makes
# the outcome deny. The checks read only data.toolgate.deployment, the
# verified part of the input, and the request's tool, arguments, resource
# and job; never caller-asserted subject properties.
package toolgate

import rego.v1

reason(code, message) := {"code": code, "message": message}

q(s) := concat("", ["'", s, "'"])

num(x) := json.marshal(x)

# --- request shape -------------------------------------------------------------

deny_reasons contains reason("unknown_tool", "request names no tool: action.name must be a non-empty string") if {
	not tool_name
}

deny_reasons contains reason("unknown_tool", concat("", ["tool ", q(tool_name), " is not in the tool registry"])) if {
	tool_name
	not tool
}

deny_reasons contains reason("unknown_tool", concat("", ["tool ", q(tool_name), " has no valid permission class in the tool registry"])) if {
	tool
	not tool_class
}

deny_reasons contains reason("missing_job", "context.job with non-empty string purpose and customer_id is required") if {
	not job
}

# --- agent ---------------------------------------------------------------------

deny_reasons contains reason("unknown_agent", "the sidecar's agent is not known to this deployment") if {
	not agent
}

deny_reasons contains reason("agent_disabled", concat("", ["agent ", q(agent_id), " is disabled"])) if {
	agent
	object.get(agent, "enabled", false) != true
}

# --- subject -------------------------------------------------------------------

deny_reasons contains reason("unknown_subject", "the verified subject is not a known user of this deployment") if {
	not user
}

# The caller may name the subject, but it must be the verified one.
deny_reasons contains reason("subject_mismatch", "request.subject.id differs from the verified subject") if {
	rid := object.get(req_subject, "id", null)
	rid != null
	rid != subject_id
}

deny_reasons contains reason("role_not_permitted", msg) if {
	user
	tool
	not role_permits_tool
	msg := concat("", [
		"subject ", q(subject_id), " (roles: ", concat(", ", sort(user_roles)), ") may not request ", q(tool_name),
	])
}

role_permits_tool if {
	some role in user_roles
	tool_name in as_array(as_object(conf_roles[role]).tools)
}

# --- grants and purposes -----------------------------------------------------------

purpose := job.purpose

excluded_for_purpose if tool_name in as_array(as_object(conf_purposes[purpose]).excluded_tools)

agent_has_purpose if {
	some g in agent_grants
	g.purpose == purpose
}

granted_for_purpose if {
	some g in agent_grants
	g.purpose == purpose
	tool_name in as_array(g.tools)
}

granted_any_purpose if {
	some g in agent_grants
	tool_name in as_array(g.tools)
}

deny_reasons contains reason("purpose_not_permitted", concat("", ["tool ", q(tool_name), " is never part of a ", q(purpose), " job"])) if {
	tool
	excluded_for_purpose
}

deny_reasons contains reason("purpose_not_permitted", concat("", ["agent ", q(agent_id), " holds no grant for job purpose ", q(purpose)])) if {
	agent
	job
	not agent_has_purpose
}

deny_reasons contains reason("purpose_not_permitted", concat("", ["tool ", q(tool_name), " is not granted for job purpose ", q(purpose)])) if {
	tool
	agent_has_purpose
	granted_any_purpose
	not granted_for_purpose
	not excluded_for_purpose
}

deny_reasons contains reason("not_granted", concat("", ["tool ", q(tool_name), " is not granted to agent ", q(agent_id)])) if {
	tool
	agent
	not granted_any_purpose
	not excluded_for_purpose
}

# --- rollout stage -------------------------------------------------------------

deny_reasons contains reason("tool_disabled", concat("", ["tool ", q(tool_name), " is disabled"])) if {
	tool_stage == "disabled"
}

deny_reasons contains reason("tool_disabled", concat("", ["tool ", q(tool_name), " has no valid rollout stage"])) if {
	tool
	not tool_stage
}

deny_reasons contains reason("shadow_mode", concat("", ["tool ", q(tool_name), " is in shadow stage: the decision the next stage would make is recorded, the call is not made"])) if {
	tool_stage == "shadow"
}

deny_reasons contains reason("stage_draft_only", concat("", ["tool ", q(tool_name), " is in draft_only stage: the agent may draft, not act"])) if {
	tool_stage == "draft_only"
	tool_class in {"approve", "execute", "admin"}
}

# --- data boundary -------------------------------------------------------------

boundary := b if {
	b := tool_rule.data_boundary
	is_string(b)
} else := b if {
	b := conf_boundary["default"]
	is_string(b)
} else := "job_customer"

customer_resource_types := string_set(conf_boundary.customer_resource_types) if {
	is_array(conf_boundary.customer_resource_types)
} else := {"customer"}

# Which customer the resource belongs to (caller-described resource).
resource_customer := req_resource.id if {
	req_resource.type in customer_resource_types
} else := as_object(req_resource.properties).customer_id

in_scope if {
	non_empty_string(resource_customer)
	resource_customer == job.customer_id
}

# Any value other than "none" is treated as "job_customer" (fail closed).
deny_reasons contains reason("out_of_scope", concat("", ["resource does not belong to the job's customer ", q(job.customer_id)])) if {
	job
	boundary != "none"
	not in_scope
}

# --- arguments -----------------------------------------------------------------

deny_reasons contains reason("invalid_arguments", "action.properties.arguments must be an object") if {
	not is_object(args_raw)
}

arg_schema := as_object(tool_rule.arguments)

deny_reasons contains reason("invalid_arguments", concat("", ["argument ", q(name), " is required"])) if {
	some name, spec in arg_schema
	as_object(spec).required == true
	not has_key(args, name)
}

deny_reasons contains reason("invalid_arguments", concat("", ["argument ", q(name), " must be of type ", spec.type])) if {
	some name, spec in arg_schema
	is_string(spec.type)
	not type_ok(spec.type, args[name])
}

deny_reasons contains reason("invalid_arguments", concat("", ["argument ", q(name), " must be at least ", num(spec.minimum)])) if {
	some name, spec in arg_schema
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

limits := [l | some l in as_array(tool_rule.limits); is_object(l); is_string(l.argument)]

deny_reasons contains reason("invalid_arguments", concat("", ["argument ", q(l.argument), " must be a number"])) if {
	some l in limits
	not number_argument(l.argument)
}

deny_reasons contains reason("limit_exceeded", concat("", ["argument ", q(l.argument), " exceeds the limit of ", num(l.max)])) if {
	some l in limits
	is_number(l.max)
	v := args[l.argument]
	is_number(v)
	v > l.max
}

deny_reasons contains reason("limit_exceeded", concat("", ["argument ", q(l.argument), " is below the minimum of ", num(l.min)])) if {
	some l in limits
	is_number(l.min)
	v := args[l.argument]
	is_number(v)
	v < l.min
}
