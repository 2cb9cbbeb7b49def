package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"io"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/sink/broker"
)

// Check tells whether cfg's broker is reachable and takes walhook's
// credentials, whether the exchange exists (a passive declare, which
// creates nothing), and the routing key each table maps to (see
// factory.Check). Whether the exchange routes a key to a queue cannot be
// asked over AMQP without publishing, which check never does: a
// message walhook publishes that nothing takes comes back (mandatory), and
// the sink then retries it, naming the routing key in status last_error.
func Check(ctx context.Context, out io.Writer, cfg config.Sink, tables []config.Table) []string {
	server := redactURL(cfg.RabbitMQ.URL)
	prefix := fmt.Sprintf("sink %s (rabbitmq %s)", cfg.Name, server)
	key, err := broker.Parse(cfg.RabbitMQ.RoutingKey, Forbidden)
	if err != nil {
		return []string{fmt.Sprintf("%s: routing_key: %v", prefix, err)}
	}
	s := &Sink{cfg: cfg, server: server}
	conn, err := s.dial(ctx)
	if err != nil {
		msg := fmt.Sprintf("%s: cannot connect: %v", prefix, err)
		if !sink.NeedsOperator(err) {
			msg += "; start the broker, or correct url"
		}
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	defer conn.Close()
	fmt.Fprintf(out, "%s: connected and authenticated (vhost %q)\n", prefix, conn.Config.Vhost)
	ch, err := conn.Channel()
	if err != nil {
		return []string{fmt.Sprintf("%s: open a channel: %v", prefix, err)}
	}
	defer ch.Close()
	exchange := cfg.RabbitMQ.Exchange
	if err := ch.ExchangeDeclarePassive(exchange, "topic", true, false, false, false, nil); err != nil {
		var ae *amqp.Error
		msg := fmt.Sprintf("%s: exchange %q: %v", prefix, exchange, err)
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			msg = fmt.Sprintf("%s: exchange %q does not exist; declare it (e.g. rabbitmqadmin declare exchange name=%s type=topic durable=true) and bind queues to it; walhook never creates exchanges", prefix, exchange, exchange)
		}
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	fmt.Fprintf(out, "%s: exchange %q exists\n", prefix, exchange)
	for _, n := range broker.Names(key, cfg, tables) {
		fmt.Fprintf(out, "%s: table %s maps to routing key %s\n", prefix, n.Table, n.Name)
	}
	fmt.Fprintf(out, "  note: whether exchange %q routes these keys to a queue cannot be checked without publishing; a message nothing takes comes back, and status last_error then names its routing key\n", exchange)
	return nil
}
