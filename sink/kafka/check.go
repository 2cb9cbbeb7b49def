package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink/broker"
)

// Check tells whether cfg's cluster is reachable and takes walhook's
// credentials, and whether the topic each table maps to exists (see
// factory.Check). It creates nothing.
func Check(ctx context.Context, out io.Writer, cfg config.Sink, tables []config.Table) []string {
	prefix := fmt.Sprintf("sink %s (kafka %s)", cfg.Name, joinBrokers(cfg.Kafka.Brokers))
	tmpl, err := parseTopic(cfg)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", prefix, err)}
	}
	options, err := clientOptions(cfg)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", prefix, err)}
	}
	cl, err := kgo.NewClient(options...)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", prefix, err)}
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		fix := "start the cluster, or correct brokers (and tls)"
		switch {
		case isAuth(err) || cfg.Kafka.SASL.Mechanism != "" && errors.Is(err, io.EOF):
			fix = "check sasl's mechanism, username and password"
		case certFix(err) != "":
			fix = certFix(err)
		}
		msg := fmt.Sprintf("%s: cannot connect: %v; %s", prefix, err, fix)
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	fmt.Fprintf(out, "%s: connected and authenticated\n", prefix)

	topicsOf := map[string][]config.Table{}
	var topics []string
	for _, t := range tables {
		for _, a := range broker.Actions(cfg) {
			name := tmpl.For(t.Schema, t.Name, a, cfg.Name)
			if !slices.Contains(topicsOf[name], t) {
				topicsOf[name] = append(topicsOf[name], t)
			}
			if !slices.Contains(topics, name) {
				topics = append(topics, name)
			}
		}
	}
	if len(topics) == 0 {
		return nil
	}
	req := kmsg.NewPtrMetadataRequest()
	for _, name := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		msg := fmt.Sprintf("%s: asking for the topics' metadata: %v", prefix, err)
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	var problems []string
	for _, rt := range resp.Topics {
		name := ""
		if rt.Topic != nil {
			name = *rt.Topic
		}
		for _, t := range topicsOf[name] {
			err := kerr.ErrorForCode(rt.ErrorCode)
			switch {
			case err == nil:
				fmt.Fprintf(out, "%s: table %s maps to topic %s (%d partitions)\n", prefix, t, name, len(rt.Partitions))
			case errors.Is(err, kerr.UnknownTopicOrPartition):
				msg := fmt.Sprintf("%s: table %s maps to topic %s, which does not exist: unknown topic; create it (e.g. kafka-topics.sh --create --topic %s); walhook never creates topics", prefix, t, name, name)
				fmt.Fprintln(out, msg)
				problems = append(problems, msg)
			case errors.Is(err, kerr.TopicAuthorizationFailed):
				msg := fmt.Sprintf("%s: table %s maps to topic %s, which walhook may not see: %v; allow the user to describe and write the topic", prefix, t, name, err)
				fmt.Fprintln(out, msg)
				problems = append(problems, msg)
			default:
				msg := fmt.Sprintf("%s: table %s maps to topic %s: %v", prefix, t, name, err)
				fmt.Fprintln(out, msg)
				problems = append(problems, msg)
			}
		}
	}
	return problems
}
