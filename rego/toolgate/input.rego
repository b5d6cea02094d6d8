# toolgate decision core - input and configuration normalisation
# Turns input and data.toolgate.deployment into total, well-typed values.
# Every value here is defined for any input (missing fields and wrong types
# fall back to empty values), so the decision is always defined.
package toolgate

import rego.v1

# --- generic helpers ---------------------------------------------------------

as_object(x) := x if is_object(x)

else := {}

as_array(x) := x if is_array(x)

else := []

has_key(o, k) if _ = o[k]

non_empty_string(x) if {
	is_string(x)
	x != ""
}

string_set(x) := {s | some s in as_array(x); is_string(s)}

# --- the deployment's data (data.toolgate.deployment) -----------------------

conf := d if {
	d := data.toolgate.deployment
	is_object(d)
} else := {}

conf_tools := as_object(object.get(conf, "tools", null))

conf_users := as_object(object.get(conf, "users", null))

conf_roles := as_object(object.get(conf, "roles", null))

conf_agents := as_object(object.get(conf, "agents", null))

conf_purposes := as_object(object.get(conf, "purposes", null))

conf_tool_rules := as_object(object.get(conf, "tool_rules", null))

conf_boundary := as_object(object.get(conf, "data_boundary", null))

conf_approval_defaults := as_object(object.get(conf, "approval_defaults", null))

# --- input -------------------------------------------------------------------

_input := input if is_object(input)

else := {}

# The request exactly as the caller sent it (caller-asserted).
req := as_object(object.get(_input, "request", null))

req_action := as_object(object.get(req, "action", null))

req_resource := as_object(object.get(req, "resource", null))

req_context := as_object(object.get(req, "context", null))

req_subject := as_object(object.get(req, "subject", null))

# What toolgate verified itself.
ver := as_object(object.get(_input, "verified", null))

tool_name := n if {
	n := object.get(req_action, "name", null)
	non_empty_string(n)
}

args_raw := object.get(as_object(object.get(req_action, "properties", null)), "arguments", {})

args := as_object(args_raw)

job := j if {
	j := object.get(req_context, "job", null)
	is_object(j)
	non_empty_string(object.get(j, "purpose", null))
	non_empty_string(object.get(j, "customer_id", null))
}

agent_id := id if {
	id := object.get(as_object(object.get(ver, "agent", null)), "id", null)
	non_empty_string(id)
}

subject_id := id if {
	id := object.get(as_object(object.get(ver, "subject", null)), "id", null)
	non_empty_string(id)
}

# Time of the decision: toolgate passes it; fall back to the clock.
time_ns := t if {
	t := object.get(ver, "time_ns", null)
	is_number(t)
} else := time.now_ns()

# --- resolved configuration for this request -----------------------------------

tool := t if {
	t := conf_tools[tool_name]
	is_object(t)
}

permission_classes := {"read", "draft", "approve", "execute", "admin"}

rollout_stages := {"disabled", "shadow", "draft_only", "supervised", "autonomous"}

tool_class := c if {
	c := tool.class
	c in permission_classes
}

tool_stage := s if {
	s := tool.stage
	s in rollout_stages
}

tool_rule := r if {
	r := conf_tool_rules[tool_name]
	is_object(r)
} else := {}

agent := a if {
	a := conf_agents[agent_id]
	is_object(a)
}

agent_grants := [g | some g in as_array(agent.grants); is_object(g)]

user := u if {
	u := conf_users[subject_id]
	is_object(u)
}

# Roles come ONLY from the deployment's data, never from the request.
user_roles := {r | some r in as_array(user.roles); is_string(r)}
