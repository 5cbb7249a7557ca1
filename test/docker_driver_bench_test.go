package test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkDockerDriverRun times `docker run -d` plus `docker rm -f` of a
// busybox container on a netalias network (through `netalias docker-plugin`)
// against Docker's built-in bridge driver, in interleaved rounds on one
// private dockerd (the order alternates each round, so drift hits both).
// Target (issue 11): the netalias median at most 1.2× the bridge's.
// Reports both medians and their ratio:
//
//	flock /tmp/netalias-kernel.lock go test ./test -run '^$' -bench DockerDriverRun -benchtime 20x
func BenchmarkDockerDriverRun(b *testing.B) {
	bin := requireDockerPlugin(b)
	d := startPrivateDockerd(b)
	img := d.importBusybox()
	stateDir := b.TempDir()
	p := startDriverPlugin(b, bin, natestName("natest-drvb"), stateDir, "--debug")

	na := natestName("natest")
	d.engine.must(b, "network", "create", "-d", p.name, "--ipam-driver", p.name,
		"--subnet", driverSubnet().String(), "-o", "netalias.network="+na, na)
	br := natestName("natest")
	d.engine.must(b, "network", "create", "--subnet", fmt.Sprintf("10.207.%d.0/24", 125+d.third), br)
	b.Cleanup(func() { d.quiet("network", "rm", na, br) })

	once := func(network string) time.Duration {
		name := natestName("bench")
		start := time.Now()
		d.engine.must(b, "run", "-d", "--name", name, "--network", network, img, "sleep", "3600")
		d.engine.must(b, "rm", "-f", name)
		return time.Since(start)
	}
	// Warm up both paths (image layers, plugin connection).
	once(na)
	once(br)
	var tNA, tBR []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			tNA = append(tNA, once(na))
			tBR = append(tBR, once(br))
		} else {
			tBR = append(tBR, once(br))
			tNA = append(tNA, once(na))
		}
	}
	b.StopTimer()
	mNA, mBR := medianDuration(tNA), medianDuration(tBR)
	b.ReportMetric(float64(mNA.Microseconds())/1000, "ms-netalias")
	b.ReportMetric(float64(mBR.Microseconds())/1000, "ms-bridge")
	b.ReportMetric(float64(mNA)/float64(mBR), "ratio")
	// Inside the plugin: the median of each call dockerd waits for while
	// it starts a container (the plugin logs every call with --debug).
	took := pluginCallTimes(b, filepath.Join(stateDir, "plugin-"+p.name+".log"))
	for _, m := range []string{"IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint", "NetworkDriver.Join"} {
		if len(took[m]) > 0 {
			b.ReportMetric(float64(medianDuration(took[m]).Microseconds())/1000, "ms-"+strings.TrimPrefix(strings.TrimPrefix(m, "IpamDriver."), "NetworkDriver."))
		}
	}
}

// pluginCallTimes reads the durations of the driver calls from the
// plugin's debug log (slog text: msg="driver call" method=M took=D).
func pluginCallTimes(b *testing.B, logPath string) map[string][]time.Duration {
	data, err := os.ReadFile(logPath)
	if err != nil {
		b.Fatal(err)
	}
	out := map[string][]time.Duration{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, `msg="driver call"`) {
			continue
		}
		var method string
		var took time.Duration
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "method="); ok {
				method = v
			} else if v, ok := strings.CutPrefix(f, "took="); ok {
				took, _ = time.ParseDuration(v)
			}
		}
		if method != "" && took > 0 {
			out[method] = append(out[method], took)
		}
	}
	return out
}

func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
