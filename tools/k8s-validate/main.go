// k8s-validate checks rendered Kubernetes manifests (e.g. `helm template`
// output) offline and strictly against the typed Kubernetes API structs of
// the pinned k8s.io/api version:
//
//   - every document is decoded with unknown fields and duplicate keys
//     refused (sigs.k8s.io/yaml UnmarshalStrict) into the Go type of its
//     apiVersion/kind, so a typo'd or misplaced field, a wrong type, a bad
//     quantity or a bad int-or-string fails;
//   - a handful of semantic rules the API server would enforce are checked
//     with apimachinery's validation helpers (names, labels, selectors,
//     container names, volume mounts, named probe ports, native sidecars);
//   - kinds it does not know fail, unless listed with -crd-minimal (checked
//     against a small local struct) — see crdKinds.
//
// Usage: k8s-validate [-q] [FILE ...]   (no FILE or "-": stdin)
// Prints one line per object ("ok <apiVersion> <Kind> <name>") and every
// problem ("error: ..."); exits 1 when any problem was found.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

type factory func() any

var builtin = map[string]factory{
	"v1/ConfigMap":                             func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                func() any { return &corev1.Secret{} },
	"v1/Service":                               func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":                 func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                                   func() any { return &corev1.Pod{} },
	"apps/v1/Deployment":                       func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                      func() any { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":                        func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                             func() any { return &batchv1.Job{} },
	"networking.k8s.io/v1/NetworkPolicy":       func() any { return &networkingv1.NetworkPolicy{} },
	"policy/v1/PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
	"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
	"autoscaling/v2/HorizontalPodAutoscaler":   func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
}

// crdKinds are custom resources whose full OpenAPI schema is not available
// offline. They are decoded strictly into the minimal structs below, which
// carry only the fields of the upstream CRD that this project renders: a field
// outside that subset fails (deliberately conservative), and the subset's
// names and types follow the upstream CRD.
var crdKinds = map[string]factory{
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &serviceMonitor{} },
}

// serviceMonitor: subset of prometheus-operator's monitoring.coreos.com/v1
// ServiceMonitor (github.com/prometheus-operator/prometheus-operator,
// pkg/apis/monitoring/v1/servicemonitor_types.go).
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port,omitempty"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
			HonorLabels   bool   `json:"honorLabels,omitempty"`
			Authorization *struct {
				Type        string                    `json:"type,omitempty"`
				Credentials *corev1.SecretKeySelector `json:"credentials,omitempty"`
			} `json:"authorization,omitempty"`
			TLSConfig *struct {
				InsecureSkipVerify bool   `json:"insecureSkipVerify,omitempty"`
				ServerName         string `json:"serverName,omitempty"`
			} `json:"tlsConfig,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

var durationRE = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

type checker struct {
	problems int
	quiet    bool
}

func (c *checker) errorf(where, format string, args ...any) {
	c.problems++
	fmt.Printf("error: %s: %s\n", where, fmt.Sprintf(format, args...))
}

func main() {
	quiet := flag.Bool("q", false, "print only problems")
	flag.Parse()
	c := &checker{quiet: *quiet}
	files := flag.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	objects := 0
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "k8s-validate: %v\n", err)
			os.Exit(2)
		}
		for i, doc := range splitDocs(data) {
			objects++
			c.document(fmt.Sprintf("%s#%d", f, i+1), doc)
		}
	}
	if objects == 0 {
		c.errorf("input", "no Kubernetes objects found")
	}
	if c.problems > 0 {
		fmt.Printf("%d problem(s) in %d object(s)\n", c.problems, objects)
		os.Exit(1)
	}
	if !c.quiet {
		fmt.Printf("%d object(s) valid\n", objects)
	}
}

// splitDocs splits a YAML stream on "---" lines, dropping documents that hold
// only comments or whitespace (helm prints "# Source: ..." before each one).
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		keep := false
		for _, line := range strings.Split(cur.String(), "\n") {
			t := strings.TrimSpace(line)
			if t != "" && !strings.HasPrefix(t, "#") {
				keep = true
				break
			}
		}
		if keep {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "---" || strings.HasPrefix(line, "--- ") {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func (c *checker) document(where string, doc []byte) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		c.errorf(where, "not a YAML mapping: %v", err)
		return
	}
	if head.APIVersion == "" || head.Kind == "" {
		c.errorf(where, "apiVersion and kind are required")
		return
	}
	gvk := head.APIVersion + "/" + head.Kind
	where = fmt.Sprintf("%s (%s %s/%s)", where, head.APIVersion, head.Kind, head.Metadata.Name)
	mk, ok := builtin[gvk]
	if !ok {
		mk, ok = crdKinds[gvk]
	}
	if !ok {
		c.errorf(where, "unknown apiVersion/kind %q: not among the types this validator knows", gvk)
		return
	}
	obj := mk()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		c.errorf(where, "strict decode against %s failed: %v", gvk, err)
		return
	}
	before := c.problems
	c.semantic(where, obj)
	if c.problems == before && !c.quiet {
		fmt.Printf("ok %s %s %s\n", head.APIVersion, head.Kind, head.Metadata.Name)
	}
}

func (c *checker) meta(where string, m *metav1.ObjectMeta, dns1035 bool) {
	if m.Name == "" {
		c.errorf(where, "metadata.name is required")
	} else if dns1035 {
		for _, e := range validation.IsDNS1035Label(m.Name) {
			c.errorf(where, "metadata.name %q: %s", m.Name, e)
		}
	} else {
		for _, e := range validation.IsDNS1123Subdomain(m.Name) {
			c.errorf(where, "metadata.name %q: %s", m.Name, e)
		}
	}
	c.labels(where+" metadata.labels", m.Labels)
	for k := range m.Annotations {
		for _, e := range validation.IsQualifiedName(strings.ToLower(k)) {
			c.errorf(where, "annotation key %q: %s", k, e)
		}
	}
}

func (c *checker) labels(where string, l map[string]string) {
	for k, v := range l {
		for _, e := range validation.IsQualifiedName(k) {
			c.errorf(where, "label key %q: %s", k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			c.errorf(where, "label %q value %q: %s", k, v, e)
		}
	}
}

func (c *checker) selector(where string, sel *metav1.LabelSelector, podLabels map[string]string) {
	if sel == nil {
		c.errorf(where, "selector is required")
		return
	}
	c.labels(where+" selector", sel.MatchLabels)
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		c.errorf(where, "selector: %v", err)
		return
	}
	if s.Empty() {
		c.errorf(where, "selector must not be empty")
	}
	if podLabels != nil && !s.Matches(labels.Set(podLabels)) {
		c.errorf(where, "selector %s does not match the pod template labels %v", s, podLabels)
	}
}

func (c *checker) semantic(where string, obj any) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		c.meta(where, &o.ObjectMeta, false)
		c.selector(where+" spec", o.Spec.Selector, o.Spec.Template.Labels)
		c.labels(where+" spec.template.metadata.labels", o.Spec.Template.Labels)
		c.podSpec(where+" spec.template.spec", &o.Spec.Template.Spec)
	case *appsv1.StatefulSet:
		c.meta(where, &o.ObjectMeta, false)
		c.selector(where+" spec", o.Spec.Selector, o.Spec.Template.Labels)
		c.podSpec(where+" spec.template.spec", &o.Spec.Template.Spec)
	case *appsv1.DaemonSet:
		c.meta(where, &o.ObjectMeta, false)
		c.selector(where+" spec", o.Spec.Selector, o.Spec.Template.Labels)
		c.podSpec(where+" spec.template.spec", &o.Spec.Template.Spec)
	case *batchv1.Job:
		c.meta(where, &o.ObjectMeta, false)
		c.podSpec(where+" spec.template.spec", &o.Spec.Template.Spec)
	case *corev1.Pod:
		c.meta(where, &o.ObjectMeta, false)
		c.podSpec(where+" spec", &o.Spec)
	case *corev1.Service:
		c.meta(where, &o.ObjectMeta, true)
		if len(o.Spec.Ports) == 0 && o.Spec.Type != corev1.ServiceTypeExternalName {
			c.errorf(where, "spec.ports must not be empty")
		}
		for _, p := range o.Spec.Ports {
			if p.Port < 1 || p.Port > 65535 {
				c.errorf(where, "port %d out of range", p.Port)
			}
			if p.Name != "" {
				for _, e := range validation.IsValidPortName(p.Name) {
					c.errorf(where, "port name %q: %s", p.Name, e)
				}
			}
			if p.TargetPort.StrVal != "" {
				for _, e := range validation.IsValidPortName(p.TargetPort.StrVal) {
					c.errorf(where, "targetPort %q: %s", p.TargetPort.StrVal, e)
				}
			}
		}
		c.labels(where+" spec.selector", o.Spec.Selector)
	case *corev1.ConfigMap:
		c.meta(where, &o.ObjectMeta, false)
		for k := range o.Data {
			for _, e := range validation.IsConfigMapKey(k) {
				c.errorf(where, "data key %q: %s", k, e)
			}
		}
	case *corev1.Secret:
		c.meta(where, &o.ObjectMeta, false)
	case *corev1.ServiceAccount:
		c.meta(where, &o.ObjectMeta, false)
	case *corev1.PersistentVolumeClaim:
		c.meta(where, &o.ObjectMeta, false)
		if len(o.Spec.AccessModes) == 0 {
			c.errorf(where, "spec.accessModes must not be empty")
		}
	case *networkingv1.NetworkPolicy:
		c.meta(where, &o.ObjectMeta, false)
		if _, err := metav1.LabelSelectorAsSelector(&o.Spec.PodSelector); err != nil {
			c.errorf(where, "spec.podSelector: %v", err)
		}
		for _, t := range o.Spec.PolicyTypes {
			if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
				c.errorf(where, "spec.policyTypes: unknown %q", t)
			}
		}
		for i, r := range o.Spec.Ingress {
			for j, p := range r.From {
				n := 0
				if p.PodSelector != nil {
					n++
				}
				if p.NamespaceSelector != nil {
					n = 1
				}
				if p.IPBlock != nil {
					if n > 0 {
						c.errorf(where, "ingress[%d].from[%d]: ipBlock may not be combined with selectors", i, j)
					}
					n++
				}
				if n == 0 {
					c.errorf(where, "ingress[%d].from[%d]: must set podSelector, namespaceSelector or ipBlock", i, j)
				}
			}
		}
	case *policyv1.PodDisruptionBudget:
		c.meta(where, &o.ObjectMeta, false)
	case *serviceMonitor:
		c.meta(where, &o.ObjectMeta, false)
		c.selector(where+" spec", &o.Spec.Selector, nil)
		if len(o.Spec.Endpoints) == 0 {
			c.errorf(where, "spec.endpoints must not be empty")
		}
		for i, ep := range o.Spec.Endpoints {
			if ep.Port == "" {
				c.errorf(where, "spec.endpoints[%d].port is required by this chart's convention", i)
			}
			for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
				if d != "" && !durationRE.MatchString(d) {
					c.errorf(where, "spec.endpoints[%d]: %q is not a Prometheus duration", i, d)
				}
			}
			if ep.Scheme != "" && ep.Scheme != "http" && ep.Scheme != "https" {
				c.errorf(where, "spec.endpoints[%d].scheme must be http or https", i)
			}
			if ep.Path != "" && !strings.HasPrefix(ep.Path, "/") {
				c.errorf(where, "spec.endpoints[%d].path must start with /", i)
			}
		}
	default:
		c.meta(where, metaOf(obj), false)
	}
}

func metaOf(obj any) *metav1.ObjectMeta {
	if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
		if om, ok := m.GetObjectMeta().(*metav1.ObjectMeta); ok {
			return om
		}
	}
	return &metav1.ObjectMeta{Name: "?"}
}

func (c *checker) podSpec(where string, p *corev1.PodSpec) {
	if len(p.Containers) == 0 {
		c.errorf(where, "containers must not be empty")
	}
	volumes := map[string]bool{}
	for _, v := range p.Volumes {
		for _, e := range validation.IsDNS1123Label(v.Name) {
			c.errorf(where, "volume name %q: %s", v.Name, e)
		}
		if volumes[v.Name] {
			c.errorf(where, "duplicate volume %q", v.Name)
		}
		volumes[v.Name] = true
		n := 0
		for _, set := range []bool{v.EmptyDir != nil, v.ConfigMap != nil, v.Secret != nil, v.PersistentVolumeClaim != nil, v.Projected != nil, v.HostPath != nil, v.Image != nil, v.DownwardAPI != nil, v.CSI != nil, v.Ephemeral != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			c.errorf(where, "volume %q must have exactly one source, has %d", v.Name, n)
		}
	}
	names := map[string]bool{}
	check := func(kind string, i int, ct *corev1.Container, init bool) {
		w := fmt.Sprintf("%s %s[%d] %q", where, kind, i, ct.Name)
		for _, e := range validation.IsDNS1123Label(ct.Name) {
			c.errorf(w, "container name: %s", e)
		}
		if names[ct.Name] {
			c.errorf(w, "duplicate container name")
		}
		names[ct.Name] = true
		if ct.Image == "" {
			c.errorf(w, "image is required")
		}
		if ct.RestartPolicy != nil {
			if !init {
				c.errorf(w, "restartPolicy is only allowed on init containers")
			} else if *ct.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				c.errorf(w, "restartPolicy of an init container may only be Always")
			}
		}
		sidecar := init && ct.RestartPolicy != nil && *ct.RestartPolicy == corev1.ContainerRestartPolicyAlways
		if init && !sidecar && (ct.ReadinessProbe != nil || ct.LivenessProbe != nil || ct.StartupProbe != nil) {
			c.errorf(w, "probes are only allowed on init containers with restartPolicy Always (native sidecars)")
		}
		ports := map[string]bool{}
		for _, cp := range ct.Ports {
			if cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
				c.errorf(w, "containerPort %d out of range", cp.ContainerPort)
			}
			if cp.Name != "" {
				for _, e := range validation.IsValidPortName(cp.Name) {
					c.errorf(w, "port name %q: %s", cp.Name, e)
				}
				ports[cp.Name] = true
			}
		}
		for _, pr := range []*corev1.Probe{ct.ReadinessProbe, ct.LivenessProbe, ct.StartupProbe} {
			if pr == nil {
				continue
			}
			if pr.HTTPGet != nil && pr.HTTPGet.Port.StrVal != "" && !ports[pr.HTTPGet.Port.StrVal] {
				c.errorf(w, "probe names port %q, which the container does not declare", pr.HTTPGet.Port.StrVal)
			}
			n := 0
			for _, set := range []bool{pr.HTTPGet != nil, pr.Exec != nil, pr.TCPSocket != nil, pr.GRPC != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				c.errorf(w, "a probe needs exactly one handler, has %d", n)
			}
		}
		mounts := map[string]bool{}
		for _, m := range ct.VolumeMounts {
			if !volumes[m.Name] {
				c.errorf(w, "volumeMount %q names no volume of the pod", m.Name)
			}
			if !strings.HasPrefix(m.MountPath, "/") {
				c.errorf(w, "volumeMount %q: mountPath must be absolute", m.Name)
			}
			if mounts[m.MountPath] {
				c.errorf(w, "two volumeMounts at %q", m.MountPath)
			}
			mounts[m.MountPath] = true
		}
		envs := map[string]bool{}
		for _, e := range ct.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				c.errorf(w, "env %q: %s", e.Name, msg)
			}
			if envs[e.Name] {
				c.errorf(w, "env %q set twice", e.Name)
			}
			envs[e.Name] = true
			if e.Value != "" && e.ValueFrom != nil {
				c.errorf(w, "env %q: value and valueFrom are exclusive", e.Name)
			}
		}
		for _, r := range []corev1.ResourceList{ct.Resources.Requests, ct.Resources.Limits} {
			for name := range r {
				if name != corev1.ResourceCPU && name != corev1.ResourceMemory && name != corev1.ResourceEphemeralStorage && !strings.Contains(string(name), "/") {
					c.errorf(w, "unknown resource %q", name)
				}
			}
		}
		for name, lim := range ct.Resources.Limits {
			if req, ok := ct.Resources.Requests[name]; ok && req.Cmp(lim) > 0 {
				c.errorf(w, "request for %s (%s) exceeds its limit (%s)", name, req.String(), lim.String())
			}
		}
	}
	for i := range p.InitContainers {
		check("initContainers", i, &p.InitContainers[i], true)
	}
	for i := range p.Containers {
		check("containers", i, &p.Containers[i], false)
	}
}
