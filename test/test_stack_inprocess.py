"""policy_node in the test process with an injected backend: compressed images, plan, markers.

Cheaper than the multi-process tests: the node runs on its own executor
thread here, a helper node feeds it and listens to what it publishes.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ros_harness import requires_ros, ros_domain  # noqa: F401  (fixture)

pytestmark = [requires_ros, pytest.mark.ros]


class PlanningPolicy:
    """A backend that always plans, then moves +1 cm in x with the gripper half closed."""

    name = "test_planner"

    def __init__(self):
        from rt2_ros.action_language import load_embodiment

        self.embodiment = load_embodiment("rt2_arm")
        self.images = []
        self.hands = []
        self.resets = 0

    def act(self, image, instruction, hand=None):
        from rt2_ros.policy.base import PolicyOutput, check_image

        self.images.append(np.array(check_image(image)))
        self.hands.append(hand)
        tokens = [0, 153, 128, 128, 128, 128, 128, 128]
        return PolicyOutput(tokens=tokens, action=self.embodiment.decode(tokens),
                            plan="reach for the cube", text="", timings={"total": 0.1})

    def reset(self):
        self.resets += 1

    def close(self):
        pass


@pytest.fixture
def compressed_policy_node(ros_domain):  # noqa: F811
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from geometry_msgs.msg import PoseStamped
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    from rt2_ros.msg import RT2Action
    from rt2_ros.nodes.policy_node import PolicyNode
    from rt2_ros.nodes.qos import ACTION_QOS, IMAGE_QOS, INSTRUCTION_QOS

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    policy = PlanningPolicy()
    node = PolicyNode(policy=policy, context=context, parameter_overrides=[
        Parameter("image_transport", value="compressed"),
        Parameter("control_rate_hz", value=20.0),
        Parameter("command_frame", value="tool0"),
        Parameter("hand_state_topic", value="ee_pose"),
        Parameter("max_image_age_s", value=5.0)])
    peer = rclpy.create_node("test_peer", context=context)
    received = {"action": [], "plan": [], "markers": []}
    peer.create_subscription(RT2Action, "rt2/action", received["action"].append, ACTION_QOS)
    peer.create_subscription(String, "rt2/plan", received["plan"].append, ACTION_QOS)
    peer.create_subscription(MarkerArray, "rt2/markers", received["markers"].append, 10)
    images = peer.create_publisher(CompressedImage, "camera/image_raw/compressed", IMAGE_QOS)
    poses = peer.create_publisher(PoseStamped, "ee_pose", 10)
    policy.poses = poses  # the hand-state test publishes on it
    instructions = peer.create_publisher(String, "rt2/instruction", INSTRUCTION_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:  # the fixture's rclpy shutdown ends the spin
            pass

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    node.start()
    try:
        yield node, policy, images, instructions, received
    finally:
        node.before_shutdown()
        rclpy.try_shutdown(context=context)
        thread.join()
        executor.shutdown()
        node.close()
        node.destroy_node()
        peer.destroy_node()


def _wait(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_compressed_images_plan_and_markers(compressed_policy_node):
    import cv2
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    node, policy, images, instructions, received = compressed_policy_node
    pixels = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", pixels[:, :, ::-1])
    assert ok
    instructions.publish(String(data="pick up the cube"))

    def publish(data):
        msg = CompressedImage(format="png", data=data)
        msg.header.stamp = node.get_clock().now().to_msg()
        images.publish(msg)
        return msg

    publish(b"\x89PNG but not really")          # undecodable: reported, not acted on
    _wait(lambda: node._stats.frames_rejected >= 1)
    assert received["action"] == []
    sent = publish(png.tobytes())
    _wait(lambda: received["action"] and received["plan"] and received["markers"])

    assert np.array_equal(policy.images[0], pixels)  # decoded to RGB
    action = received["action"][0]
    assert (action.header.stamp.sec, action.header.stamp.nanosec) == \
        (sent.header.stamp.sec, sent.header.stamp.nanosec)
    assert action.header.frame_id == "tool0" and action.plan == "reach for the cube"
    assert action.backend == "test_planner" and action.step == 0
    assert action.delta_position.x == pytest.approx(0.01) and 0.0 < action.gripper < 1.0
    assert received["plan"][0].data == "reach for the cube"
    markers = received["markers"][0].markers
    assert len(markers) == 4 and all(m.header.frame_id == "tool0" for m in markers)
    arrow = markers[0]
    assert arrow.points[1].x == pytest.approx(0.01 * node.settings.marker_scale)
    assert "pick up the cube" in markers[2].text and "reach for the cube" in markers[3].text
    # Each image is used once: no second action until a new image arrives.
    time.sleep(0.3)
    assert len(received["action"]) == 1
    assert node._stats.frames_rejected == 1
    assert "cannot decode" in node._stats.last_image_problem


def test_the_hand_state_comes_from_the_pose_topic_and_the_nodes_own_gripper_commands(compressed_policy_node):
    import cv2
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    from rt2_ros.policy.base import HandState

    node, policy, images, instructions, received = compressed_policy_node
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))

    def image():
        msg = CompressedImage(format="png", data=png.tobytes())
        msg.header.stamp = node.get_clock().now().to_msg()
        images.publish(msg)

    def pose(z, frame="tool0"):
        msg = PoseStamped()
        msg.header.frame_id = frame
        msg.pose.position.z = z
        policy.poses.publish(msg)

    instructions.publish(String(data="pick up the cube"))
    image()                                      # no pose yet: acts without the hand's state
    _wait(lambda: len(received["action"]) >= 1)
    assert policy.hands == [None]
    pose(0.5, frame="camera")                    # another frame: not used, said once
    pose(0.123)
    _wait(lambda: node._hand_pose is not None)
    image()
    _wait(lambda: len(received["action"]) >= 2)
    # The height from the pose, the gripper command the node sent with its first action.
    hand = policy.hands[1]
    assert isinstance(hand, HandState) and hand.height_m == pytest.approx(0.123)
    assert hand.gripper_command == pytest.approx(received["action"][0].gripper)
