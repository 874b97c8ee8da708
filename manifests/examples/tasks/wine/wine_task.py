"""Wine cultivars (scikit-learn's bundled wine dataset: 178 wines, 13 measurements, 3 cultivars) with a
logistic-regression model trained by SGD, federated across the project's learners.

Every learner loads the whole (public, bundled) dataset and keeps its own share of it, cut by the project's
spec.data.partitioning (IID by default, or Dirichlet label skew); SklearnTask does the rest: the weights
(coef_ and intercept_), training with partial_fit, evaluation (log loss, accuracy) and the logged model.
"""

from sklearn.datasets import load_wine
from sklearn.linear_model import SGDClassifier

from flops_learner.sklearn_task import SklearnTask

FEATURES = 13
CULTIVARS = [0, 1, 2]


def make_model() -> SGDClassifier:
    # Logistic regression (log loss) learned by SGD. A constant step: each round starts from the averaged weights
    # with a fresh step schedule, and the default schedule's large first steps make the average jump about.
    return SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.05)


def load_data():
    # The measurements span 0.1 to 1680: standardised so that SGD treats them alike. The statistics are the
    # public dataset's, identical on every learner, so the same scaling holds for the registered model's inputs.
    x, y = load_wine(return_X_y=True)
    return (x - x.mean(axis=0)) / x.std(axis=0), y


task = SklearnTask(model=make_model, data=load_data, n_features=FEATURES, classes=CULTIVARS, name="wine")
