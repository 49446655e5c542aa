import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;

/**
 * Hadoop's own test clusters on 127.0.0.1 for imgfeat's tests (tests/hadoop): a MiniDFSCluster (one
 * NameNode, one DataNode) and, with --yarn, a MiniYARNCluster (one ResourceManager, NODES NodeManagers)
 * whose containers read from that HDFS.
 *
 * Usage: MiniClusters WORKDIR [--yarn NODES] [--put LOCAL_DIR HDFS_DIR]...
 *
 * Writes the clients' configuration (core-site.xml, hdfs-site.xml, yarn-site.xml) to WORKDIR/conf, for
 * HADOOP_CONF_DIR / YARN_CONF_DIR, uploads each LOCAL_DIR, prints "READY hdfs://127.0.0.1:PORT" and then
 * runs until its standard input closes (the test's fixture closes it, or dies), when it stops both
 * clusters. So a test that fails or is killed never leaves a cluster behind.
 */
public final class MiniClusters {
    public static void main(String[] args) throws Exception {
        Path work = Path.of(args[0]).toAbsolutePath();
        int yarnNodes = 0;
        java.util.List<String[]> uploads = new java.util.ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            if (args[i].equals("--yarn")) {
                yarnNodes = Integer.parseInt(args[++i]);
            } else if (args[i].equals("--put")) {
                uploads.add(new String[] {args[++i], args[++i]});
            } else {
                throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        Path conf = Files.createDirectories(work.resolve("conf"));

        Configuration hdfsConf = new Configuration();
        hdfsConf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, work.resolve("dfs").toString());
        hdfsConf.set("dfs.namenode.rpc-address", "127.0.0.1:0");
        hdfsConf.set("dfs.datanode.address", "127.0.0.1:0");
        hdfsConf.set("dfs.datanode.http.address", "127.0.0.1:0");
        hdfsConf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        hdfsConf.set("dfs.namenode.http-address", "127.0.0.1:0");
        hdfsConf.setBoolean("dfs.permissions.enabled", false);
        MiniDFSCluster dfs = new MiniDFSCluster.Builder(hdfsConf).numDataNodes(1).build();
        dfs.waitActive();
        String uri = "hdfs://127.0.0.1:" + dfs.getNameNodePort();

        Configuration clientConf = new Configuration(false);
        clientConf.set("fs.defaultFS", uri);
        MiniYARNCluster yarn = null;
        if (yarnNodes > 0) {
            YarnConfiguration yarnConf = new YarnConfiguration();
            yarnConf.set("fs.defaultFS", uri);
            yarnConf.set(YarnConfiguration.RM_HOSTNAME, "127.0.0.1");
            yarnConf.set(YarnConfiguration.NM_ADDRESS, "127.0.0.1:0");
            yarnConf.setBoolean(YarnConfiguration.NM_PMEM_CHECK_ENABLED, false);
            yarnConf.setBoolean(YarnConfiguration.NM_VMEM_CHECK_ENABLED, false);
            yarnConf.setInt(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, 256);
            yarnConf.setInt(YarnConfiguration.NM_PMEM_MB, 6144);
            yarnConf.setInt(YarnConfiguration.NM_VCORES, 4);
            // One queue, first come first served: the test clusters need no capacity planning.
            yarnConf.set(YarnConfiguration.RM_SCHEDULER,
                "org.apache.hadoop.yarn.server.resourcemanager.scheduler.fifo.FifoScheduler");
            yarnConf.set(YarnConfiguration.NM_DISK_HEALTH_CHECK_ENABLE, "false");
            yarnConf.set("yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage", "99.9");
            yarn = new MiniYARNCluster("imgfeat", yarnNodes, 1, 1);
            yarn.init(yarnConf);
            yarn.start();
            // The ResourceManager's real addresses, for spark-submit --master yarn.
            Configuration started = yarn.getConfig();
            for (java.util.Map.Entry<String, String> e : started) {
                if (e.getKey().startsWith("yarn.resourcemanager.") && e.getKey().endsWith("address")) {
                    clientConf.set(e.getKey(), e.getValue());
                }
            }
            clientConf.set("yarn.resourcemanager.hostname", "127.0.0.1");
            waitForNodes(yarn, yarnNodes);
        }
        for (String name : new String[] {"core-site.xml", "hdfs-site.xml", "yarn-site.xml"}) {
            try (OutputStream out = new FileOutputStream(conf.resolve(name).toFile())) {
                clientConf.writeXml(out);
            }
        }
        FileSystem fs = FileSystem.get(java.net.URI.create(uri), clientConf);
        for (String[] upload : uploads) {
            fs.copyFromLocalFile(new org.apache.hadoop.fs.Path(new File(upload[0]).toURI()), new org.apache.hadoop.fs.Path(uri + upload[1]));
        }
        System.out.println("READY " + uri);
        System.out.flush();
        while (System.in.read() >= 0) {
            // runs until the test closes our standard input
        }
        if (yarn != null) {
            yarn.stop();
        }
        dfs.shutdown();
        System.out.println("STOPPED");
    }

    private static void waitForNodes(MiniYARNCluster yarn, int nodes) throws InterruptedException {
        long deadline = System.currentTimeMillis() + 60_000;
        while (yarn.getResourceManager().getRMContext().getRMNodes().size() < nodes) {
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("YARN NodeManagers did not register within 60 s");
            }
            Thread.sleep(200);
        }
    }
}
